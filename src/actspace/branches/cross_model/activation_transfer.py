"""Activation transfer: inject a source model's mapped activation into a target model.

Experiment 2A ``activation_transfer``. An affine map from the source's residual stream at one layer
to the target's at one layer is fitted on training items (ridge on standardised features, the
penalty by generalised cross-validation as in PM1; :class:`actspace.methods.ridge.AffineMap`).
On held-out items, the mapped source
activation of the item is written into the target's residual stream at the **last context
token**, either replacing the target's own vector or blended with it, ``h <- (1 - c) h + c m``;
``c`` is chosen on a validation split. The target then scores the choices as usual: every
(context + choice) sequence runs with the patch at the context's last position, so every
continuation token attends to the patched residual and the first choice token is predicted
from it (:mod:`actspace.methods.injection`).

Reported on the test items: the source's, the target's and the target-with-transfer accuracy,
the gain in points with a paired bootstrap interval and McNemar's test, and two controls: the
mapped activation of a different item (a derangement of the test items), and the target's own
activation passed through the target-to-target map (the cost of the map and of the injection
alone). Success (:func:`transfer_criteria`) is the plan's rule, a gain of at least ``min_gain``
points whose paired interval lies above 0, AND the shuffled-item control: the transfer must beat
another item's mapped activation (paired interval over items of the difference above 0), so a
gain that any mapped vector would give is not a transfer. The target-to-target control is
reported, not required (see :func:`transfer_criteria`). The test items choose nothing: the map's
penalty is chosen on the training items, the coefficient on the validation items.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from statsmodels.stats.contingency_tables import mcnemar

from actspace import plan
from actspace.core import criteria
from actspace.core.groups import store_groups
from actspace.core.resampling import mean_ci, paired_difference_ci
from actspace.core.results import binary_comparison, no_value_result, now
from actspace.core.splits import group_cut, group_order
from actspace.core.store import StoreLike, nearest_stored_layer
from actspace.lm.models import hidden_size, residual_blocks
from actspace.lm.tasks import Item
from actspace.methods.injection import (
    METRIC_COLUMNS,
    correctness,
    encode_items,
    predictions,
    score_items,
)
from actspace.methods.ridge import AffineMap, ridge_alphas
from actspace.methods.similarity import depth_to_layer

EXPERIMENT = plan.experiment("activation_transfer").name
HEADLINE_METRIC = "transfer_gain_points"


# ---------------------------------------------------------------------------------------------
# statistics


def paired_gain(
    new: np.ndarray,
    base: np.ndarray,
    *,
    n_bootstrap: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """Accuracy gain of ``new`` over ``base`` (bool per item) in points, with CI and McNemar."""
    new = np.asarray(new, dtype=bool)
    base = np.asarray(base, dtype=bool)
    gain = 100.0 * float(new.mean() - base.mean())
    if new.size >= 2 and np.any(new != base):
        low, high = paired_difference_ci(
            np.mean,
            [new.astype(float)],
            [base.astype(float)],
            n_resamples=n_bootstrap,
            level=level,
            seed=seed,
        )
        ci = [100.0 * low, 100.0 * high]
    else:
        ci = [gain, gain]
    both = int(np.sum(new & base))
    base_only = int(np.sum(~new & base))
    new_only = int(np.sum(new & ~base))
    neither = int(np.sum(~new & ~base))
    discordant = base_only + new_only
    if discordant == 0:
        p_value, exact = 1.0, True
    else:
        exact = discordant < 25
        test = mcnemar([[both, base_only], [new_only, neither]], exact=exact, correction=True)
        p_value = float(test.pvalue)
    return {
        "gain_points": gain,
        "ci": ci,
        "mcnemar_p": p_value,
        "mcnemar_exact": exact,
        "table": {"both": both, "base_only": base_only, "new_only": new_only, "neither": neither},
    }


def transfer_comparison(moved: np.ndarray, base: np.ndarray, metric: str) -> dict[str, Any]:
    """The main comparison, per held-out item: right with the transfer (a) vs without (b)."""
    return binary_comparison(
        moved,
        base,
        description=(
            f"target {metric} with the transferred activation against the target alone, per "
            "held-out item"
        ),
        label_a="transfer",
        label_b="target alone",
    )


def transfer_criteria(
    gain: Mapping[str, Any],
    over_shuffled: Mapping[str, Any],
    min_gain: float,
    ci_level: float = 0.95,
) -> list[dict[str, Any]]:
    """The parts of success: the plan's gain over the target, then the shuffled-item control.

    ``gain`` is :func:`paired_gain` of the transfer over the target alone, ``over_shuffled`` of
    the transfer over the shuffled-item control (the same items with another item's mapped
    activation injected at the same coefficient). The shuffled control holds the map, the
    injection, the coefficient and the distribution of injected vectors fixed and removes only
    what is specific to the item, which is what the claim is about. The target-to-target control
    is not a part: its vector is the target's own activation through a self-map, injected at the
    coefficient chosen for the source's map, so it measures what the map and the injection cost,
    not a rival explanation of a gain; a lossy self-map would make it an easier bar than the
    target alone, a lossless one the same bar.
    """
    level = f"{100 * ci_level:g}%"
    points = float(gain["gain_points"])
    return [
        criteria.criterion(
            "gain_over_target",
            kind="plan",
            rule=(
                f"target + transfer beats the target alone by at least {min_gain:g} accuracy "
                f"points, and the paired {level} interval of the gain over items lies above 0"
            ),
            value=points,
            ci=gain["ci"],
            bound=min_gain,
            passed=bool(points >= min_gain and gain["ci"][0] > 0),
        ),
        criteria.criterion(
            "beats_shuffled_control",
            kind="control",
            rule=(
                "target + transfer beats target + another item's mapped activation (the "
                f"shuffled-item control): the paired {level} interval over items of transfer "
                "minus shuffled, in points, lies above 0"
            ),
            value=over_shuffled["gain_points"],
            ci=over_shuffled["ci"],
            bound=0.0,
        ),
    ]


def _item_variation(acts: np.ndarray) -> float:
    """How much a layer's vectors differ across items, relative to their size (0: identical)."""
    norms = np.linalg.norm(acts, axis=1)
    spread = np.linalg.norm(acts - acts.mean(axis=0), axis=1)
    return float(spread.mean() / norms.mean()) if norms.mean() > 0 else 0.0


def _accuracy(correct: np.ndarray, n_bootstrap: int, seed: int, level: float) -> dict[str, Any]:
    values = np.asarray(correct, dtype=float)
    ci = (
        list(mean_ci(values, n_resamples=n_bootstrap, level=level, seed=seed))
        if values.size >= 2 and values.min() != values.max()
        else [float(values.mean())] * 2
    )
    return {"value": float(values.mean()), "ci": ci, "n": int(values.size)}


# ---------------------------------------------------------------------------------------------
# the experiment


def split_transfer_items(
    n: int,
    n_samples: int | None,
    test_fraction: float,
    val_fraction: float,
    seed: int,
    groups: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded ``(train, val, test)`` store indices (sorted) of a subsample of ``n`` items, every
    group of ``groups`` (one label per store item) in one part; items that share no group split
    as they always did."""
    for name, value in (("test_fraction", test_fraction), ("val_fraction", val_fraction)):
        if not 0.0 < value < 1.0:
            raise ValueError(f"{name} must lie in (0, 1), got {value}")
    if test_fraction + val_fraction >= 1.0:
        raise ValueError(
            f"test_fraction + val_fraction must be below 1, got {test_fraction} + {val_fraction}"
        )
    rng = np.random.default_rng(seed)
    m = n if n_samples is None else min(n, int(n_samples))
    if m < 10:
        raise ValueError(f"activation transfer needs at least 10 items, got {m}")
    items = np.sort(rng.choice(n, size=m, replace=False)) if m < n else np.arange(n)
    item_groups = None if groups is None else np.asarray(groups)[items]
    positions = group_order(item_groups, m, rng)
    order = items[positions]
    n_test = group_cut(positions, item_groups, max(4, int(round(test_fraction * m))))
    n_val = max(2, int(round(val_fraction * m)))
    n_val = group_cut(positions, item_groups, n_test + n_val) - n_test
    if m - n_test - n_val < 4 or min(n_test, n_val) < 1:
        raise ValueError(f"{m} items leave fewer than 4 training items after the splits")
    test, val, train = order[:n_test], order[n_test : n_test + n_val], order[n_test + n_val :]
    return np.sort(train), np.sort(val), np.sort(test)


def derangement(n: int, rng: np.random.Generator) -> np.ndarray:
    """A random permutation of ``range(n)`` with no fixed point (n >= 2)."""
    if n < 2:
        raise ValueError("a derangement needs at least 2 items")
    while True:
        perm = rng.permutation(n)
        if not np.any(perm == np.arange(n)):
            return perm


def resolve_layer(value: int | str, n_layers: int, depth: float, *, minimum: int) -> int:
    """An explicit layer index, or ``auto``: the layer at relative ``depth`` (min. ``minimum``)."""
    if value == "auto":
        return max(minimum, depth_to_layer(n_layers, depth))
    layer = int(value)
    if not minimum <= layer <= n_layers:
        raise ValueError(f"layer {layer} out of range {minimum}..{n_layers}")
    return layer


def _layer_origin(source_layer: int | str, target_layer: int | str, depth: float) -> str:
    """How the two layers were set, in words, for the headline's ``selection``."""
    if source_layer == target_layer == "auto":
        return f"both at relative depth {depth:g}"
    return f"source {source_layer}, target {target_layer}; auto = relative depth {depth:g}"


def _check_items(items: Sequence[Item], stores: Mapping[str, StoreLike]) -> None:
    ids = [item.id for item in items]
    for role, store in stores.items():
        store_ids = [str(row.get("id")) for row in store.scores()]
        if store_ids != ids:
            raise ValueError(
                f"the {role} store's items ({len(store_ids)}) are not the task's items "
                f"({len(ids)}) in the same order"
            )


def run_activation_transfer(
    source_store: StoreLike,
    target_store: StoreLike,
    model: Any,
    tokenizer: Any,
    items: Sequence[Item],
    *,
    source: str,
    target: str,
    source_layer: int | str,
    target_layer: int | str,
    layer_depth: float,
    mode: str,
    coefficients: Sequence[float],
    metric: str,
    n_samples: int | None,
    test_fraction: float,
    val_fraction: float,
    ridge_alpha: str | float | list[float],
    n_bootstrap: int,
    min_gain: float,
    batch_size: int,
    seed: int,
    pooling: str = "last",
    ci_level: float = 0.95,
) -> dict[str, Any]:
    """Fit the map, choose the coefficient on validation items, and evaluate on test items.

    The keywords are the keys of ``experiments.activation_transfer`` (``source`` and ``target``
    name the two models in the results; ``ridge_alpha`` as the configuration gives it) and the
    run's ``seed``. ``pooling`` must be ``last``: the store's last-context-token vectors are what
    is injected.
    """
    started, date = time.perf_counter(), now()
    if source == target:
        reason = (
            f"activation transfer maps one model's activations into another's; source and target "
            f"are both {source} (this study has one model)"
        )
        record = no_value_result(
            EXPERIMENT,
            HEADLINE_METRIC,
            reason,
            started=started,
            date=date,
            source=source,
            target=target,
        )
        return record
    if not 0.0 <= layer_depth <= 1.0:
        raise ValueError(f"layer_depth must lie in [0, 1], got {layer_depth}")
    if pooling != "last":
        raise ValueError("activation transfer injects at the last context token: pooling 'last'")
    if metric not in METRIC_COLUMNS:
        raise ValueError(f"metric must be one of {', '.join(METRIC_COLUMNS)}, got {metric!r}")
    if mode not in ("blend", "replace"):
        raise ValueError(f"mode must be blend or replace, got {mode!r}")
    grid = [1.0] if mode == "replace" else sorted({float(c) for c in coefficients})
    if not grid or any(not 0.0 < c <= 1.0 for c in grid):
        raise ValueError(f"coefficients must lie in (0, 1], got {list(coefficients)}")
    _check_items(items, {"source": source_store, "target": target_store})
    n_blocks = len(residual_blocks(model))
    if int(target_store.n_layers) != n_blocks or int(target_store.hidden_size) != hidden_size(
        model
    ):
        raise ValueError(
            f"the target store ({target_store.n_layers} blocks, width {target_store.hidden_size}) "
            f"was not made by this model ({n_blocks} blocks, width {hidden_size(model)})"
        )
    layer_s = resolve_layer(source_layer, int(source_store.n_layers), layer_depth, minimum=0)
    layer_t = resolve_layer(target_layer, n_blocks, layer_depth, minimum=1)
    # auto: the stored layer nearest to the depth (extract.layers may store fewer than all)
    if source_layer == "auto":
        layer_s = nearest_stored_layer(source_store, layer_s)
    if target_layer == "auto":
        layer_t = nearest_stored_layer(target_store, layer_t, minimum=1)

    train, val, test = split_transfer_items(
        len(items), n_samples, test_fraction, val_fraction, seed, store_groups(target_store)
    )
    alpha = ridge_alphas(ridge_alpha)
    x = np.asarray(source_store.layer(layer_s, pooling), dtype=np.float64)
    y = np.asarray(target_store.layer(layer_t, pooling), dtype=np.float64)
    source_map = AffineMap(alpha).fit(x[train], y[train])
    self_map = AffineMap(alpha).fit(y[train], y[train])
    mapped = source_map.predict(x)
    self_mapped = self_map.predict(y)

    encoded = encode_items(model, tokenizer, items)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def run(
        index: np.ndarray, vectors: np.ndarray | None = None, c: float = 1.0, capture: bool = False
    ) -> tuple[np.ndarray, np.ndarray, list[list[float]], np.ndarray | None]:
        subset = [encoded[i] for i in index]
        logliks, captured = score_items(
            model,
            subset,
            layer=None if vectors is None else layer_t,
            vectors=vectors,
            coefficient=c,
            capture_layer=layer_t if capture else None,
            batch_size=batch_size,
            pad_token_id=pad,
        )
        chosen = [items[i] for i in index]
        return (
            correctness(logliks, chosen, metric),
            predictions(logliks, chosen, metric),
            logliks,
            captured,
        )

    # validation: the coefficient
    val_base, _, _, _ = run(val)
    tried = []
    for c in grid:
        val_correct, _, _, _ = run(val, mapped[val], c)
        tried.append({"coefficient": c, "val_accuracy": float(val_correct.mean())})
    best = max(tried, key=lambda row: (row["val_accuracy"], -row["coefficient"]))
    coefficient = best["coefficient"]

    # test: baseline, transfer and the two controls
    rng = np.random.default_rng(seed + 104729)
    shuffle = derangement(test.size, rng)
    base, base_pred, base_ll, own = run(test, capture=True)
    moved, moved_pred, _, _ = run(test, mapped[test], coefficient)
    shuffled, _, _, _ = run(test, mapped[test][shuffle], coefficient)
    selfed, _, _, _ = run(test, self_mapped[test], coefficient)

    column = METRIC_COLUMNS[metric]
    source_rows = [source_store.scores()[i] for i in test]
    source_correct = np.array([bool(row[column]) for row in source_rows])
    pred_key = "pred" if metric == "acc" else "pred_norm"
    source_pred = np.array([int(row[pred_key]) for row in source_rows])
    target_rows = [target_store.scores()[i] for i in test]

    def acc(values: np.ndarray) -> dict[str, Any]:
        return _accuracy(values, n_bootstrap, seed, ci_level)

    def gain(values: np.ndarray) -> dict[str, Any]:
        return paired_gain(values, base, n_bootstrap=n_bootstrap, seed=seed, level=ci_level)

    transfer_gain = gain(moved)
    over_shuffled = paired_gain(moved, shuffled, n_bootstrap=n_bootstrap, seed=seed, level=ci_level)
    parts = transfer_criteria(transfer_gain, over_shuffled, min_gain, ci_level)
    success = criteria.success(parts)
    disagree = base_pred != source_pred
    store_ll = [np.asarray(row["logliks"], dtype=np.float64) for row in target_rows]
    results = {
        "experiment": EXPERIMENT,
        "name": EXPERIMENT,
        "metric": HEADLINE_METRIC,
        "value": transfer_gain["gain_points"],
        "ci": transfer_gain["ci"],
        "ci_level": ci_level,
        "threshold": float(min_gain),
        "success": success,
        "verdict": "SUCCESS" if success else "NO_TRANSFER",
        "criteria": parts,
        **criteria.held_out_record(
            True,
            f"the layers are configured ({_layer_origin(source_layer, target_layer, layer_depth)})"
            f", the map's ridge penalty is chosen on the {train.size} training items and the "
            f"coefficient on the {val.size} validation items; the {test.size} test items choose "
            "nothing",
        ),
        "n": int(test.size),
        "duration_s": 0.0,
        "date": date,
        "metric_description": (
            f"target {metric} with the mapped source activation injected minus the target's own "
            "accuracy, in points, on held-out items; paired bootstrap CI over items; success "
            f"means a gain of at least {min_gain:g} points whose CI lies above 0 and a paired CI "
            "of transfer minus the shuffled-item control above 0"
        ),
        "source": source,
        "target": target,
        "source_layer": layer_s,
        "target_layer": layer_t,
        "layer_depth": float(layer_depth),
        "pooling": pooling,
        "accuracy_metric": metric,
        "mode": mode,
        "coefficient": coefficient,
        "coefficients_tried": tried,
        "val_target_accuracy": float(val_base.mean()),
        "n_train": int(train.size),
        "n_val": int(val.size),
        "n_test": int(test.size),
        "seed": int(seed),
        "accuracy": {
            "source": acc(source_correct),
            "target": acc(base),
            "target_with_transfer": acc(moved),
            "shuffled_control": acc(shuffled),
            "target_to_target_control": acc(selfed),
        },
        "gain": {
            "transfer": transfer_gain,
            "shuffled_control": gain(shuffled),
            "target_to_target_control": gain(selfed),
        },
        "transfer_minus_shuffled_points": over_shuffled["gain_points"],
        "transfer_over_shuffled": over_shuffled,
        "comparison": transfer_comparison(moved, base, metric),
        "map": {
            "ridge_alpha": source_map.alpha_,
            "heldout": source_map.score(x[test], y[test]),
            "train": source_map.score(x[train], y[train]),
            "target_to_target_ridge_alpha": self_map.alpha_,
            "target_to_target_heldout": self_map.score(y[test], y[test]),
        },
        "diagnostics": {
            "headroom_source_right_target_wrong": int(np.sum(source_correct & ~base)),
            "target_right_source_wrong": int(np.sum(~source_correct & base)),
            "prediction_changed_share": float(np.mean(moved_pred != base_pred)),
            "moved_to_source_prediction_share": (
                float(np.mean(moved_pred[disagree] == source_pred[disagree]))
                if disagree.any()
                else None
            ),
            "n_source_target_disagree": int(disagree.sum()),
            "store_loglik_max_abs_diff": float(
                max(
                    np.max(np.abs(np.asarray(a) - b))
                    for a, b in zip(base_ll, store_ll, strict=True)
                )
            ),
            "store_activation_max_abs_diff": float(np.max(np.abs(own - y[test]))),
            "target_item_variation": _item_variation(y[test]),
            "store_activation_scale": float(np.max(np.abs(y[test]))),
        },
    }
    results["duration_s"] = round(time.perf_counter() - started, 3)
    return results
