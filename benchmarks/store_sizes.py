"""Expected activation-store sizes of a study, old layout against new, computed (no extraction).

Runs by hand (not in CI)::

    python benchmarks/store_sizes.py                            # config/paper.yaml
    python benchmarks/store_sizes.py --config config/paper.yaml --layers 0 6 12

The stores a study extracts are the (model, task) pairs its steps read (the pre-mortems', 2A's and
2B's sections). For each, the size of ``pooled.safetensors`` and ``choice_end.safetensors`` is
``values x bytes per value`` (headers, a few hundred bytes, and ``scores.jsonl``, which does not
change, are left out):

- old layout: float32 on a CPU (float16 on a GPU), every layer, choice ends padded to the task's
  most choices: pooled ``poolings x items x (L+1) x d``, choice ends ``items x max_choices x
  (L+1) x d`` (plus one mask byte per slot);
- new layout: ``extract.storage_dtype: auto`` = float16 everywhere, the layers of ``--layers``
  (default all), one choice-end row per real choice plus 4 bytes of count per item.

Model shapes are their Hugging Face configs' (blocks, width); items and choice counts come from
the benchmark copies in ``../shared/benchmarks`` (the task's first ``limit`` items, or every item
when the limit is above the count). The models are not needed.
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "benchmarks"

#: (blocks, hidden size) of the paper study's hub models, from their config.json.
SHAPES = {
    "gpt2": (12, 768),
    "EleutherAI/pythia-70m": (6, 512),
    "EleutherAI/pythia-160m": (12, 768),
    "facebook/opt-125m": (12, 768),
}


def _rows(name: str) -> list[dict]:
    with gzip.open(SHARED / name, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def choice_counts(task: dict) -> list[int]:
    """The number of choices of each item the task extracts (its first ``limit`` in count)."""
    kind = task["type"]
    if kind == "hellaswag":
        counts = [len(row["endings"]) for row in _rows("hellaswag_validation.jsonl.gz")]
    elif kind.startswith("truthfulqa"):
        key = "mc1_targets" if kind.endswith("mc1") else "mc2_targets"
        counts = [len(row[key]["choices"]) for row in _rows("truthfulqa_mc_validation.jsonl.gz")]
    elif kind == "mmlu":
        counts = [len(row["choices"]) for row in _rows("mmlu_test.jsonl.gz")]
    else:
        raise ValueError(f"no benchmark copy for task type {kind!r}")
    limit = task.get("limit")
    # a subsample draws `limit` items at random: for tasks whose items all have the same number
    # of choices the first `limit` are exact, otherwise their mix is the whole set's on average
    return counts if limit is None else counts[:limit]


def study_stores(config: dict) -> list[tuple[str, str]]:
    """The (model, task) stores the study's steps read, in first-use order."""
    pre, exp = config["premortems"], config["experiments"]
    pairs = [(m, pre["pm1"]["task"]) for m in pre["pm1"]["models"]]
    pairs.append((pre["pm2"]["model"], pre["pm2"]["task"]))
    xm, xt = exp["cross_model_extended"], exp["activation_transfer"]
    pairs += [(m, xm["task"]) for m in xm["models"]]
    pairs += [(xt["source"], xt["task"]), (xt["target"], xt["task"])]
    for name in ("error_prediction_extended", "unsupervised_error", "abstention"):
        pairs += [(m, t) for m in exp[name]["models"] for t in exp[name]["tasks"]]
    return list(dict.fromkeys(pairs))


def sizes(
    items: int, choices: int, max_choices: int, blocks: int, d: int, poolings: int, layers: int
) -> dict[str, int]:
    """Bytes of the old float32 / float16 padded layout and of the new packed float16 one."""
    full = blocks + 1
    old_values = poolings * items * full * d + items * max_choices * full * d
    new_values = poolings * items * layers * d + choices * layers * d
    mask = items * max_choices
    return {
        "old_f32": 4 * old_values + mask,
        "old_f16": 2 * old_values + mask,
        "new": 2 * new_values + 4 * items,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "config" / "paper.yaml"))
    parser.add_argument("--layers", type=int, nargs="*", help="extract.layers (default: all)")
    args = parser.parse_args()
    config = yaml.safe_load(Path(args.config).read_text(encoding="utf-8"))
    poolings = len(config["extract"]["poolings"])
    totals = {"old_f32": 0, "old_f16": 0, "new": 0}
    print("| store | items | choices (max) | old f32 MB | old f16 MB | new MB |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for model, task in study_stores(config):
        blocks, d = SHAPES[config["models"][model]["id"]]
        counts = choice_counts(config["tasks"][task])
        items, n_choices, widest = len(counts), sum(counts), max(counts)
        layers = len([k for k in args.layers if k <= blocks]) if args.layers else blocks + 1
        row = sizes(items, n_choices, widest, blocks, d, poolings, layers)
        for key in totals:
            totals[key] += row[key]
        print(
            f"| {model}/{task} | {items} | {n_choices} ({widest}) | {row['old_f32'] / 1e6:.1f} "
            f"| {row['old_f16'] / 1e6:.1f} | {row['new'] / 1e6:.1f} |"
        )
    print(
        f"| total | | | {totals['old_f32'] / 1e6:.1f} | {totals['old_f16'] / 1e6:.1f} "
        f"| {totals['new'] / 1e6:.1f} |"
    )
    print(
        f"new / old on a CPU: {totals['new'] / totals['old_f32']:.3f}; "
        f"new / old on a GPU: {totals['new'] / totals['old_f16']:.3f}"
    )


if __name__ == "__main__":
    main()
