"""Known answer (issue 16, 5d): two items of the same group never land on both sides of a split.

The groups come from realistic rows through :func:`actspace.core.groups.item_group`: built-in
facts asked in several phrasings (entity groups), the built-in sums (``a+b`` and ``b+a`` share
their sorted operands), and HellaSwag contexts written from one source video (``source_id``).
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.model_selection import train_test_split

from actspace.core.groups import item_group
from actspace.core.splits import correctness_split, grouped_folds, grouped_split
from actspace.lm.tasks import hellaswag_item
from actspace.methods.probes import _inner_folds
from actspace.world.synthetic import World


def _entity_rows() -> list[dict]:
    """Each built-in fact asked three ways: three items per entity."""
    facts = World.generate(0).task_items("facts")
    return [
        {"id": f"{row['id']}/{k}", "metadata": row["metadata"]} for row in facts for k in range(3)
    ]


def _operand_rows() -> list[dict]:
    return World.generate(0).task_items("arithmetic")


def _hellaswag_rows() -> list[dict]:
    """HellaSwag contexts, one to four per source video, as the loader reads them."""
    rng = np.random.default_rng(0)
    rows, ind = [], 0
    for source in range(50):
        for _ in range(int(rng.integers(1, 5))):
            doc = {
                "ind": ind,
                "activity_label": "Roof shingle removal",
                "ctx_a": "A man is sitting on a roof.",
                "ctx_b": "he",
                "endings": ["starts pulling up roofing.", "is ripping level tiles off.", "a", "b"],
                "label": "0",
                "source_id": f"activitynet~v_{source:04d}",
            }
            item = hellaswag_item(doc, ind, f"hellaswag row {ind}")
            rows.append({"id": item.id, "metadata": item.metadata})
            ind += 1
    return rows


ROWS = {"entity": _entity_rows, "operands": _operand_rows, "hellaswag source": _hellaswag_rows}


@pytest.fixture(params=list(ROWS), scope="module")
def grouped(request: pytest.FixtureRequest) -> tuple[np.ndarray, np.ndarray]:
    """Group labels of realistic rows, and a correctness that groups share more often than not."""
    labels = np.array([item_group(row) for row in ROWS[request.param]()])
    _, codes = np.unique(labels, return_inverse=True)
    rng = np.random.default_rng(1)
    group_correct = rng.random(codes.max() + 1) < 0.6
    correct = np.where(rng.random(labels.size) < 0.8, group_correct[codes], ~group_correct[codes])
    assert np.unique(labels).size < labels.size  # some groups hold several items
    return labels, correct


def _apart(labels: np.ndarray, a: np.ndarray, b: np.ndarray) -> bool:
    return not set(labels[a]) & set(labels[b])


def test_groups_come_from_the_rows() -> None:
    sums = _operand_rows()
    a, b = next(r["metadata"]["operands"] for r in sums if len(set(r["metadata"]["operands"])) > 1)
    mirror = next(r for r in sums if r["metadata"]["operands"] == [b, a])
    first = next(r for r in sums if r["metadata"]["operands"] == [a, b])
    assert item_group(first) == item_group(mirror) == f"operands:{min(a, b)},{max(a, b)}"
    assert item_group(_hellaswag_rows()[0]) == "source:activitynet~v_0000"
    entities = [item_group(row) for row in _entity_rows()[:4]]
    assert entities[0] == entities[1] == entities[2] != entities[3]


def test_correctness_split_keeps_groups_on_one_side(grouped) -> None:
    labels, correct = grouped
    ungrouped = correctness_split(correct, test_fraction=0.3, seed=0)
    assert not _apart(labels, ungrouped.train, ungrouped.test)  # the rule this test checks
    for seed in range(5):
        for n_samples in (None, int(0.7 * labels.size)):
            split = correctness_split(
                correct, n_samples=n_samples, test_fraction=0.3, seed=seed, groups=labels
            )
            item_labels = labels[split.items]
            assert _apart(item_labels, split.train, split.test)
            assert sorted([*split.train, *split.test]) == list(range(split.items.size))
            assert split.groups is not None and list(split.groups) == list(item_labels)
            assert 0.2 < split.test.size / split.items.size < 0.45


def test_grouped_split_and_folds_keep_groups_on_one_side(grouped) -> None:
    labels, correct = grouped
    n = labels.size
    for seed in range(3):
        train, test = grouped_split(
            n, test_fraction=0.25, seed=seed, groups=labels, stratify=correct
        )
        assert _apart(labels, train, test) and train.size + test.size == n
        folds = grouped_folds(n, n_folds=5, n_repeats=2, seed=seed, groups=labels, stratify=correct)
        for fold in folds:
            assert _apart(labels, fold.train, fold.test)
        for repeat in (0, 1):
            held = np.concatenate([f.test for f in folds if f.repeat == repeat])
            assert sorted(held) == list(range(n))  # every item held out once per repeat


def test_the_probe_inner_folds_keep_groups_on_one_side(grouped) -> None:
    labels, correct = grouped
    X = np.zeros((labels.size, 1))
    for train, test in _inner_folds(X, correct, labels, 5, seed=0):
        assert _apart(labels, train, test)


def test_without_shared_groups_the_split_is_the_ungrouped_one() -> None:
    """groups=None is sklearn's stratified train_test_split with the seed, as before; so is a
    store whose items share nothing (every item its own group)."""
    rng = np.random.default_rng(2)
    correct = rng.random(200) < 0.65
    for seed in (0, 7):
        expected = train_test_split(
            np.arange(200), test_size=0.3, stratify=correct, random_state=seed
        )
        plain = correctness_split(correct, seed=seed)
        assert list(plain.test) == sorted(expected[1]) and plain.groups is None
        own = correctness_split(correct, seed=seed, groups=[f"item:{i}" for i in range(200)])
        assert list(own.test) == list(plain.test) and list(own.train) == list(plain.train)
    with pytest.raises(ValueError, match="one label per item"):
        correctness_split(correct, groups=["a"] * 10)


def test_group_order_keeps_groups_adjacent_and_is_a_plain_permutation_without_shared_groups():
    from actspace.core.splits import group_cut, group_order

    same = group_order(np.arange(12), 12, np.random.default_rng(4))
    assert np.array_equal(same, np.random.default_rng(4).permutation(12))
    groups = np.repeat(np.arange(6), 3)  # three items per group
    order = group_order(groups, groups.size, np.random.default_rng(0))
    assert sorted(order) == list(range(groups.size))
    for cut_at in range(groups.size + 1):
        cut = group_cut(order, groups, cut_at)
        assert cut % 3 == 0 and abs(cut - cut_at) <= 1
        assert not set(groups[order[:cut]]) & set(groups[order[cut:]])


def test_the_cross_model_splits_keep_each_group_on_one_side():
    from actspace.branches.cross_model.activation_transfer import split_transfer_items
    from actspace.branches.cross_model.cross_model_extended import split_items

    groups = np.array([f"operands:{min(a, b)},{max(a, b)}" for a in range(10) for b in range(10)])
    items, train, test = split_items(100, None, 0.3, 5, groups)
    assert not set(groups[items[train]]) & set(groups[items[test]])
    assert 25 <= test.size <= 35
    parts = split_transfer_items(100, 80, 0.3, 0.2, 5, groups)
    seen = [set(groups[part]) for part in parts]
    assert not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2])
    # every item its own group: the split of old, drawn from one seeded permutation
    assert all(
        np.array_equal(a, b)
        for a, b in zip(
            split_items(100, None, 0.3, 5),
            split_items(100, None, 0.3, 5, np.arange(100)),
            strict=True,
        )
    )
