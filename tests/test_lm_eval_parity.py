"""Parity with lm-evaluation-harness (benchmarks/lm_eval_parity.py), item by item.

The slow test runs the check on the real model (SmolLM2-135M-Instruct) over the real benchmark
files; the fast tests check, without a model, that the harness (from task YAMLs that include its
own) asks for exactly the prompts the project's loaders build, that the item comparison and its
verdicts are right, and that the MC2 formula is the harness's.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import math
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "lm_eval_parity.py"

#: What the issue asks: every choice within 1e-3 nats; the MC2 formula within 1e-6.
TOLERANCE = 1e-3
MC2_FORMULA_TOLERANCE = 1e-6


def _need_lm_eval() -> None:
    try:
        import lm_eval  # noqa: F401
    except ImportError as error:
        pytest.skip(f"lm-eval is not importable ({error}): pip install -e '.[parity]'")


@pytest.fixture(scope="module")
def parity() -> ModuleType:
    """benchmarks/lm_eval_parity.py as a module (benchmarks are not a package)."""
    spec = importlib.util.spec_from_file_location("lm_eval_parity", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _head(source: Path, target: Path, n: int, keep: object = None) -> None:
    """The first ``n`` rows of a .jsonl.gz file (of each subject when ``keep`` is 'subject')."""
    rows, counts = [], {}
    with gzip.open(source, "rt", encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            key = row.get("subject") if keep == "subject" else None
            if counts.get(key, 0) < n:
                counts[key] = counts.get(key, 0) + 1
                rows.append(row)
    with gzip.open(target, "wt", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in rows)


# --------------------------------------------------------------------------- fast: pure logic


class _Item:
    def __init__(self, id: str, context: str, choices: list[str], label: int, **metadata):
        self.id, self.context, self.choices, self.label = id, context, choices, label
        self.metadata = metadata


def _sample(doc_id: int, item: _Item, logliks: list[float], acc: float) -> dict:
    return {
        "doc_id": doc_id,
        "arguments": [(item.context, " " + choice) for choice in item.choices],
        "filtered_resps": [(value, False) for value in logliks],
        "acc": acc,
    }


def test_check_same_items_known_answers(parity: ModuleType) -> None:
    items = [_Item("a", "Q: x\nA:", ["yes", "no"], 0), _Item("b", "Q: y\nA:", ["up", "down"], 1)]
    samples = [_sample(i, item, [-1.0, -2.0], 1.0) for i, item in enumerate(items)]
    parity.check_same_items("t", items, samples)  # the same items: no error
    with pytest.raises(ValueError, match="the project has 2 items, the harness 1"):
        parity.check_same_items("t", items, samples[:1])
    with pytest.raises(ValueError, match="harness document 1 at position 0"):
        parity.check_same_items("t", items, samples[::-1])
    changed = [samples[0], {**samples[1], "arguments": [("Q: y\nA:", "up"), ("Q: y\nA:", " down")]}]
    with pytest.raises(ValueError, match=r"item 1 \(b\): request 0 differs"):
        parity.check_same_items("t", items, changed)  # delimiter missing on the harness side
    short = [samples[0], {**samples[1], "arguments": samples[1]["arguments"][:1]}]
    with pytest.raises(ValueError, match="request 1 differs: harness None"):
        parity.check_same_items("t", items, short)


def test_compare_and_summarise_known_answers(parity: ModuleType) -> None:
    # choices of 1 and 4 characters: normalising by length turns the prediction around
    item = _Item("a", "c", ["x", "yyyy"], 1)
    sample = _sample(0, item, [-1.0, -1.5], 0.0)
    sample["acc_norm"] = 1.0
    row = {"id": "a", "logliks": [-1.0004, -1.5], "pred": 0, "pred_norm": 1}
    row |= {"correct": False, "correct_norm": True}
    out = parity.compare_item(item, sample, row)
    assert out["max_abs_diff"] == pytest.approx(4e-4)
    assert (out["harness_pred"], out["harness_pred_norm"]) == (0, 1)
    summary = parity.summarise([out], tolerance=1e-3)
    assert summary["ok"] and summary["acc_identical"] and summary["acc_norm_identical"]
    assert not parity.summarise([out], tolerance=1e-4)["ok"]  # 4e-4 nats is over 1e-4
    flipped = parity.compare_item(item, sample, {**row, "pred": 1, "correct": True})
    summary = parity.summarise([out, flipped], tolerance=1e-3)
    assert summary["pred_agreement"] == 0.5 and not summary["acc_identical"] and not summary["ok"]
    # MC2: the project's formula applied to the harness's numbers must give the harness's value
    mc2_item = _Item("m", "c", ["t", "f", "t2"], 0, labels=[1, 0, 1])
    logliks = [math.log(0.5), math.log(0.3), math.log(0.2)]
    mc2_sample = _sample(0, mc2_item, logliks, 0.7)
    mc2_row = {"id": "m", "logliks": logliks, "pred": 0, "pred_norm": 0, "mc2": 0.7}
    mc2_out = parity.compare_item(mc2_item, mc2_sample, mc2_row)
    assert mc2_out["project_mc2_on_harness_logliks"] == pytest.approx(0.7, abs=1e-12)
    assert parity.summarise([mc2_out], tolerance=1e-3)["ok"]
    wrong = parity.compare_item(mc2_item, {**mc2_sample, "acc": 0.5}, {**mc2_row, "mc2": 0.5})
    assert not parity.summarise([wrong], tolerance=1e-3)["ok"]


def test_argmax_and_family(parity: ModuleType) -> None:
    assert parity.argmax([-2.0, -1.0, -1.0]) == 1  # the first maximum, as numpy.argmax
    assert parity.family("parity_mmlu_high_school_physics") == "mmlu"
    assert parity.family("parity_truthfulqa_mc2") == "truthfulqa_mc2"


def test_mc2_formula_is_the_harness(parity: ModuleType) -> None:
    """The project's mc2_score equals lm-eval's own process_results_mc2, also for a true answer
    listed after a false one (TruthfulQA items 164 and 607)."""
    _need_lm_eval()
    from lm_eval.tasks.truthfulqa.utils import process_results_mc2

    from actspace.lm.scoring import mc2_score

    cases = [
        ([-1.0, -2.0, -3.0], [1, 1, 0]),
        ([-0.7, -1.2, -1.6], [1, 0, 1]),
        ([-9.0, -8.0, -7.5, -7.0, -6.0, -6.5, -8.0], [1, 1, 0, 1, 0, 0, 0]),
    ]
    for logliks, labels in cases:
        doc = {"mc2_targets": {"labels": labels}}
        expected = process_results_mc2(doc, [(value, False) for value in logliks])["acc"]
        assert mc2_score(logliks, labels) == pytest.approx(expected, abs=1e-12)


def test_harness_prompts_equal_project_items(
    parity: ModuleType, shared_benchmarks: Path, tmp_path: Path
) -> None:
    """Without a model: the requests the harness builds from the task YAMLs (its own YAMLs
    included) are exactly the project's (context, " " + choice) for the same first items."""
    _need_lm_eval()
    data = tmp_path / "data"
    data.mkdir()
    for key, name in parity.DATA_FILES.items():
        keep = "subject" if key.startswith("mmlu") else None
        _head(shared_benchmarks / name, data / name, 6 if keep else 12, keep)
    prepared = parity.prepare(data, tmp_path / "work", limit=10, mmlu_limit=2)
    assert len(prepared.items) == 3 + 57  # one harness task per MMLU subject
    requests = parity.harness_requests(prepared.task_dir, prepared.limits)
    for name, items in prepared.items.items():
        assert len(items) == (2 if parity.family(name) == "mmlu" else 10)
        parity.check_same_items(name, items, requests[name])
    physics = requests["parity_mmlu_high_school_physics"][0]["arguments"][0][0]
    assert physics.startswith(
        "The following are multiple choice questions (with answers) about high school physics.\n\n"
    )
    hellaswag = prepared.items["parity_hellaswag"][0]
    assert hellaswag.context == "Roof shingle removal: A man is sitting on a roof. he"
    # limit 0: every item of the file on both sides
    every = parity.prepare(data, tmp_path / "all", tasks=["truthfulqa_mc1"], limit=0)
    requests = parity.harness_requests(every.task_dir, every.limits)
    assert len(every.items["parity_truthfulqa_mc1"]) == 12
    parity.check_same_items(
        "mc1", every.items["parity_truthfulqa_mc1"], requests["parity_truthfulqa_mc1"]
    )


def test_mmlu_fewshot_prompts_equal(
    parity: ModuleType, shared_benchmarks: Path, tmp_path: Path
) -> None:
    """Few-shot MMLU: the harness's first_n dev examples are the project's."""
    _need_lm_eval()
    data = tmp_path / "data"
    data.mkdir()
    for key in ("mmlu_test", "mmlu_dev"):
        name = parity.DATA_FILES[key]
        _head(shared_benchmarks / name, data / name, 5, "subject")
    prepared = parity.prepare(data, tmp_path / "work", tasks=["mmlu"], limit=1, mmlu_fewshot=3)
    requests = parity.harness_requests(prepared.task_dir, prepared.limits)
    for name, items in prepared.items.items():
        parity.check_same_items(name, items, requests[name])
    context = prepared.items["parity_mmlu_anatomy"][0].context
    assert context.count("\nAnswer:") == 4  # three shots and the question


# --------------------------------------------------------------------------- slow: real model


@pytest.mark.slow
def test_real_model_matches_lm_eval(
    real_lm_dir: Path, shared_benchmarks: Path, tmp_path: Path
) -> None:
    """SmolLM2-135M-Instruct: 50 HellaSwag, 50 TruthfulQA MC1 and MC2, 57 MMLU items (one per
    subject) scored by lm-eval 0.4.13 and by the project agree item by item."""
    _need_lm_eval()
    output = tmp_path / "parity.json"
    command = [sys.executable, str(SCRIPT), "--model", str(real_lm_dir)]
    command += ["--data", str(shared_benchmarks), "--limit", "50", "--mmlu-limit", "1"]
    command += ["--output", str(output), "--tolerance", str(TOLERANCE)]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=ROOT)
    print(done.stdout + f"\nparity check took {time.perf_counter() - start:.0f} s")
    assert output.is_file(), done.stderr[-3000:]
    report = json.loads(output.read_text())
    assert report["settings"]["lm_eval_version"] == "0.4.13"
    assert set(report["summary"]) == {"hellaswag", "mmlu", "truthfulqa_mc1", "truthfulqa_mc2"}
    for task, rows in report["items"].items():
        assert len(rows) >= 50, task
        for row in rows:
            where = f"{task} {row['id']}"
            pairs = zip(row["harness_logliks"], row["project_logliks"], strict=True)
            assert all(abs(a - b) <= TOLERANCE for a, b in pairs), where
            assert row["harness_pred"] == row["project_pred"], where
            assert row["harness_pred_norm"] == row["project_pred_norm"], where
            if task == "truthfulqa_mc2":
                formula = abs(row["harness_mc2"] - row["project_mc2_on_harness_logliks"])
                assert formula <= MC2_FORMULA_TOLERANCE, where
                assert abs(row["harness_mc2"] - row["project_mc2"]) <= TOLERANCE, where
            else:
                assert row["harness_acc"] == row["project_acc"], where
                assert row["harness_acc_norm"] == row["project_acc_norm"], where
    assert report["ok"] and done.returncode == 0, done.stdout
