"""The gate's error rates: how often each pre-mortem's verdict PASSes with no effect, and with one.

Runs by hand (not in CI; the PM2 part takes longest, about 9 s a replicate on one core)::

    python benchmarks/gate_error_rates.py                      # all three, 200 replicates each
    python benchmarks/gate_error_rates.py --pms pm3 --replicates 50

For each pre-mortem it draws seeded synthetic stores (or prompt pairs) in two scenarios and runs the
pre-mortem's own entry function at the schema's default sizes and settings:

- ``null``: no signal beyond what the pre-mortem's control already explains (PM1: both models'
  activations are a function of the input tokens, which the layer-0 embeddings carry; PM2: the
  activations hold the output confidence and noise, and correctness depends on the confidence
  alone; PM3: only the cells next to the input and the read-out flip every answer, the interior
  layers flip exactly at the threshold's rate);
- ``effect``: the same plus a planted effect of known size (PM1: a latent shared by both models'
  middle layers and absent from the embeddings; PM2: a correctness signal in one layer beyond the
  confidence; PM3: interior layers that flip 90% of the answers).

It prints, per pre-mortem and scenario, the share of replicates whose verdict is PASS under each
criterion (plan and controlled), with a Clopper-Pearson 95% interval: under ``null`` that is the
false-PASS rate (goal for the controlled criterion: at most 5%), under ``effect`` the power.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy import stats

from actspace.core.cli import schema_defaults

# --- a store backed by arrays (the interface the pre-mortems read) -------------------------------


class ArrayStore:
    """Pooled activations per (layer, pooling), choice log-likelihoods and correctness."""

    def __init__(
        self,
        layers: dict[str, list[np.ndarray]],
        *,
        correct: np.ndarray | None = None,
        logliks: list[np.ndarray] | None = None,
        model: str = "synthetic",
    ) -> None:
        self._layers = layers
        first = next(iter(layers.values()))
        self.n_layers = len(first) - 1
        self.n_items = first[0].shape[0]
        self._correct = correct
        self._logliks = logliks
        self.meta = {"model": model, "task": "synthetic", "n_items": self.n_items}

    def layer(self, k: int, pooling: str = "last") -> np.ndarray:
        return self._layers[pooling][k]

    def correct(self) -> np.ndarray:
        assert self._correct is not None
        return self._correct

    def logliks(self) -> list[np.ndarray]:
        assert self._logliks is not None
        return self._logliks

    def scores(self) -> list[dict[str, Any]]:
        return [{"id": f"item{i}", "metadata": {}} for i in range(self.n_items)]


def _noise(rng: np.random.Generator, n: int, d: int, scale: float) -> np.ndarray:
    return scale * rng.normal(size=(n, d))


# --- PM1 ------------------------------------------------------------------------------------------

PM1_D, PM1_BLOCKS, PM1_SHARED = 64, 4, 0.3


def _carrier(rng: np.random.Generator, signal: np.ndarray, share: float) -> np.ndarray:
    """A representation in which ``signal`` (items x k) explains ``share`` of each dimension's
    variance and independent noise the rest."""
    n, k = signal.shape
    loading = rng.normal(size=(k, PM1_D)) / np.sqrt(k)
    return np.sqrt(share) * signal @ loading + np.sqrt(1 - share) * rng.normal(size=(n, PM1_D))


def pm1_stores(rng: np.random.Generator, n: int, effect: float) -> dict[str, ArrayStore]:
    """Two independent representations that share one per-item scalar (token identity,
    position or length) explaining 30% of each dimension's variance (r about 0.33 at d = 64);
    the layer-0 embeddings carry that scalar as strongly as the middle layers do. With
    ``effect`` > 0 the middle layers also share an 8-dimensional latent that no embedding
    carries, explaining ``effect`` of the variance that the noise held."""
    scalar = rng.normal(size=(n, 1))
    latent = rng.normal(size=(n, 8))
    stores = {}
    for name in ("model_a", "model_b"):
        embed_last = _carrier(rng, scalar, PM1_SHARED)
        embed_mean = _carrier(rng, scalar, PM1_SHARED)
        layers = [embed_last]
        for _ in range(PM1_BLOCKS):
            hidden = _carrier(rng, scalar, PM1_SHARED)
            if effect > 0:
                hidden = np.sqrt(1 - effect) * hidden + np.sqrt(effect) * _carrier(rng, latent, 1)
            layers.append(hidden)
        means = [embed_mean, *(h + 0.1 * rng.normal(size=h.shape) for h in layers[1:])]
        stores[name] = ArrayStore({"last": layers, "mean": means}, model=name)
    return stores


def run_pm1_replicate(seed: int, effect: float) -> dict[str, Any]:
    from actspace.premortems.pm1 import run_pm1

    params = schema_defaults("premortems.pm1")
    params = {k: v for k, v in params.items() if k not in {"models", "task"}}
    params.update(n_permutations=1)  # the null's p-value is not part of either verdict
    rng = np.random.default_rng(seed)
    return run_pm1(pm1_stores(rng, params["n_samples"], effect), **params, seed=seed)


# --- PM2 ------------------------------------------------------------------------------------------

PM2_D, PM2_BLOCKS, PM2_CHOICES = 64, 4, 4


def pm2_store(rng: np.random.Generator, n: int, effect: float) -> ArrayStore:
    """A calibrated model: it is right with the probability it gives its answer, times, with
    ``effect`` > 0, the odds of a latent that layer 2 carries and the output does not.

    Every layer holds the choice log-likelihoods through a random linear map, plus noise: a probe
    on it can read the confidence, and (null) nothing else about correctness.
    """
    logliks = rng.normal(scale=1.5, size=(n, PM2_CHOICES))
    probs = np.exp(logliks - logliks.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    top1 = probs.max(axis=1)
    latent = rng.normal(size=n)
    log_odds = np.log(top1 / (1 - top1)) + effect * latent
    correct = rng.random(n) < 1 / (1 + np.exp(-log_odds))
    layers = []
    for k in range(PM2_BLOCKS + 1):
        hidden = logliks @ rng.normal(size=(PM2_CHOICES, PM2_D)) + _noise(rng, n, PM2_D, 1.0)
        if k == 2:
            hidden += np.outer(latent, rng.normal(size=PM2_D)) / np.sqrt(PM2_D) * 4
        layers.append(hidden)
    return ArrayStore({"last": layers}, correct=correct, logliks=list(logliks))


def run_pm2_replicate(seed: int, effect: float) -> dict[str, Any]:
    from actspace.premortems.pm2 import run_pm2

    params = schema_defaults("premortems.pm2")
    params = {k: v for k, v in params.items() if k not in {"model", "task"}}
    rng = np.random.default_rng(seed)
    return run_pm2(pm2_store(rng, params["n_samples"], effect), **params, seed=seed)


# --- PM3 ------------------------------------------------------------------------------------------

PM3_BLOCKS, PM3_ENTITIES = 12, 25


def _patching_run(
    rng: np.random.Generator, position: str, edge_layers: set[int], rate: float
) -> Any:
    """Synthetic per-pair patching results: two pairs per entity, the ``edge_layers`` flip every
    answer, every other layer flips an entity's pairs together with probability ``rate``."""
    from actspace.methods.patching import LayerPatching

    n = 2 * PM3_ENTITIES
    groups = [f"entity:{i // 2}" for i in range(n)]
    layers = list(range(PM3_BLOCKS + 1))
    flips = np.zeros((n, len(layers)), dtype=bool)
    for j, layer in enumerate(layers):
        by_entity = rng.random(PM3_ENTITIES) < rate
        flips[:, j] = True if layer in edge_layers else np.repeat(by_entity, 2)
    clean, corrupted = np.full(n, 2.0), np.full(n, -2.0)
    patched = np.where(flips, 1.5, -1.5) + 0.2 * rng.normal(size=flips.shape)
    return LayerPatching(
        ids=[f"pair-{i}" for i in range(n)],
        layers=layers,
        position=position,
        positions=np.zeros(n, dtype=int),
        clean_diff=clean,
        corrupted_diff=corrupted,
        patched_diff=patched,
        flipped=patched > 0,
        flipped_argmax=patched > 0,
        candidate_tokens=[0, 1],
        clean_argmax_correct=np.ones(n, dtype=bool),
        corrupted_argmax_correct=np.ones(n, dtype=bool),
        skipped={},
        n_multi_token_answers=0,
        groups=groups,
    )


def run_pm3_replicate(seed: int, effect: float) -> dict[str, Any]:
    """PM3 on synthetic pairs: the cells next to the input (layers 0, 1 at the differing token)
    and the read-out (layers L-1, L at the final token) flip everything; interior layers flip
    at the threshold's rate (null) or at ``effect`` (the planted effect)."""
    from actspace.premortems.pm3 import pm3_from_patching

    params = schema_defaults("premortems.pm3")
    rate = effect if effect > 0 else params["threshold"]
    rng = np.random.default_rng(seed)
    runs = {
        "diff": _patching_run(rng, "diff", {0, 1}, rate),
        "final": _patching_run(rng, "final", {PM3_BLOCKS - 1, PM3_BLOCKS}, rate),
    }
    return pm3_from_patching(
        runs,
        n_blocks=PM3_BLOCKS,
        layer_band=params["layer_band"],
        n_bootstrap=params["n_bootstrap"],
        seed=seed,
        threshold=params["threshold"],
        selection_fraction=params["selection_fraction"],
        position=params["position"],
    )


# --- the harness ----------------------------------------------------------------------------------

#: Each pre-mortem's replicate function and its planted effect size (the ``effect`` scenario).
SCENARIOS: dict[str, tuple[Callable[[int, float], dict[str, Any]], float]] = {
    "pm1": (run_pm1_replicate, 0.1),
    "pm2": (run_pm2_replicate, 1.5),
    "pm3": (run_pm3_replicate, 0.9),
}


def exact_interval(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Clopper-Pearson interval of a binomial proportion."""
    result = stats.binomtest(k, n).proportion_ci(confidence_level=level, method="exact")
    return float(result.low), float(result.high)


def _replicate(job: tuple[str, str, int]) -> tuple[str, str, str, str]:
    pm, scenario, seed = job
    run, size = SCENARIOS[pm]
    record = run(seed, size if scenario == "effect" else 0.0)
    return pm, scenario, record["plan_verdict"], record["controlled_verdict"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pms", nargs="+", default=list(SCENARIOS), choices=list(SCENARIOS))
    parser.add_argument("--replicates", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0, help="replicate r uses seed + r")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes")
    args = parser.parse_args(argv)
    jobs = [
        (pm, scenario, args.seed + r)
        for pm in args.pms
        for scenario in ("null", "effect")
        for r in range(args.replicates)
    ]
    started = time.perf_counter()
    if args.jobs > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(args.jobs) as pool:
            outcomes = list(pool.map(_replicate, jobs, chunksize=4))
    else:
        outcomes = [_replicate(job) for job in jobs]
    print(f"{len(jobs)} replicates in {time.perf_counter() - started:.0f} s\n")
    print(
        "| pre-mortem | scenario | replicates | PASS, plan criterion | PASS, controlled criterion |"
    )
    print("| --- | --- | --- | --- | --- |")
    for pm in args.pms:
        for scenario in ("null", "effect"):
            rows = [o for o in outcomes if o[0] == pm and o[1] == scenario]
            cells = []
            for column in (2, 3):
                k = sum(o[column] == "PASS" for o in rows)
                low, high = exact_interval(k, len(rows))
                cells.append(f"{k / len(rows):.1%} [{low:.1%}, {high:.1%}]")
            print(f"| {pm.upper()} | {scenario} | {len(rows)} | {cells[0]} | {cells[1]} |")
    print(
        "\nnull: no signal beyond the control's (PASS = a false PASS; goal for the controlled "
        "criterion: at most 5%); effect: a planted effect of known size (PASS = power)."
    )


if __name__ == "__main__":
    main()
