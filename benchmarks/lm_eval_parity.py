"""Check the project's scoring against lm-evaluation-harness, item by item, on any local model.

Runs by hand (and in the slow test ``tests/test_lm_eval_parity.py``)::

    python benchmarks/lm_eval_parity.py --model /path/to/save_pretrained/folder \\
        --data ../shared/benchmarks --limit 50 --output parity.json

Both sides score the same items of HellaSwag, MMLU and TruthfulQA MC1/MC2, read from the local
``.jsonl.gz`` files in ``--data`` (``hellaswag_validation``, ``mmlu_test``, ``mmlu_dev``,
``truthfulqa_mc_validation``; Hugging Face schemas):

- **harness**: lm-eval (``lm_eval.simple_evaluate`` with ``HFLM``, ``log_samples=True``) on task
  YAMLs written into a temporary folder. Each one ``include:``\\ s the harness's own YAML
  (``lm_eval/tasks/hellaswag/hellaswag.yaml``, ``mmlu/default/mmlu_<subject>.yaml``,
  ``truthfulqa/truthfulqa_mc1.yaml``, ``truthfulqa_mc2.yaml``), so prompts, preprocessing,
  description lines and ``process_results`` are the harness's; only the data location changes
  (``dataset_path: json``), and ``acc_norm`` is added to the metrics of MMLU and MC1.
  MMLU runs as the harness's ``mmlu`` group does: one task per subject (each reads that
  subject's rows of ``mmlu_test``, few-shot examples from its ``mmlu_dev`` rows).
- **project**: the task loaders (:func:`actspace.lm.tasks.load_task` with ``source: local``,
  ``limit``, ``subsample: false``), the rows round trip of ``prepare_task``, then
  :func:`actspace.lm.extraction.extract_store` (what ``scripts/extract.py`` runs: the shared-prefix
  pass of :func:`actspace.lm.forward.score_batch`) and the score rows of the store
  (:func:`actspace.lm.scoring.item_metrics`: ``pred``, ``pred_norm``, ``correct``, ``mc2``).

Items: the first ``--limit`` documents of each task (the harness's ``limit`` and the project's
``limit`` both take the first N in file order; 0 takes them all); for MMLU the first
``--mmlu-limit`` (default ``--limit``) of *each subject*, as ``lm_eval --tasks mmlu --limit N``
does. Before comparing, every pair is checked to be the same item: the harness's
``(context, continuation)`` requests must equal the project's ``(context, " " + choice)``
strings exactly.

Compared per item: every choice's log-likelihood (nats), the prediction (argmax) and the
length-normalised prediction, ``acc`` and ``acc_norm`` (the harness's own per-sample metrics), and
for MC2 the ``mc2`` value (the harness's ``process_results_mc2``) and the project's ``mc2_score``
applied to the harness's log-likelihoods (the same formula on the same numbers). The JSON output
holds every item and a summary per task; a table is printed; the exit code is 1 when a check fails
(``--tolerance`` nats, default 1e-3; MC2 formula 1e-6).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

#: The tasks this check knows, in the order they are run and printed.
TASKS = ("hellaswag", "mmlu", "truthfulqa_mc1", "truthfulqa_mc2")

#: Data files expected in ``--data`` (the ../shared/benchmarks names).
DATA_FILES = {
    "hellaswag": "hellaswag_validation.jsonl.gz",
    "truthfulqa": "truthfulqa_mc_validation.jsonl.gz",
    "mmlu_test": "mmlu_test.jsonl.gz",
    "mmlu_dev": "mmlu_dev.jsonl.gz",
}

#: The data files each task reads.
NEEDS = {
    "hellaswag": ("hellaswag",),
    "mmlu": ("mmlu_test", "mmlu_dev"),
    "truthfulqa_mc1": ("truthfulqa",),
    "truthfulqa_mc2": ("truthfulqa",),
}

PREFIX = "parity_"
MC2_FORMULA_TOLERANCE = 1e-6


# --------------------------------------------------------------------------- task YAMLs


def harness_task_dir() -> Path:
    """The folder of the installed harness's own task YAMLs (``lm_eval/tasks``)."""
    import lm_eval.tasks

    return Path(lm_eval.tasks.__file__).resolve().parent


def _metrics(*names: str) -> list[dict[str, Any]]:
    return [{"metric": n, "aggregation": "mean", "higher_is_better": True} for n in names]


def _local(cache: Path, split: str, path: Path, **extra: Any) -> dict[str, Any]:
    """Load the split from a local JSONL file, the ``datasets`` cache kept under ``cache``."""
    files = {split: str(path), **{k: str(v) for k, v in extra.items()}}
    kwargs = {"data_files": files, "cache_dir": str(cache)}
    return {"dataset_path": "json", "dataset_name": None, "dataset_kwargs": kwargs}


def task_configs(
    tasks: Sequence[str],
    data: Path,
    mmlu_files: dict[str, tuple[Path, Path]],
    mmlu_fewshot: int,
    harness: Path,
    cache: Path,
) -> dict[str, dict[str, Any]]:
    """Task name -> YAML mapping: the harness's own YAML ``include``\\ d, data made local.

    ``mmlu_files`` maps each MMLU subject to its (test, dev) JSONL files; ``datasets`` keeps its
    cache of them under ``cache`` (a temporary folder, not the user's cache).
    """
    configs: dict[str, dict[str, Any]] = {}
    if "hellaswag" in tasks:
        configs[PREFIX + "hellaswag"] = {
            "include": str(harness / "hellaswag" / "hellaswag.yaml"),
            "training_split": None,
            **_local(cache, "validation", data / DATA_FILES["hellaswag"]),
        }
    for variant in ("mc1", "mc2"):
        if f"truthfulqa_{variant}" in tasks:
            config = {
                "include": str(harness / "truthfulqa" / f"truthfulqa_{variant}.yaml"),
                **_local(cache, "validation", data / DATA_FILES["truthfulqa"]),
            }
            if variant == "mc1":
                config["metric_list"] = _metrics("acc", "acc_norm")
            configs[f"{PREFIX}truthfulqa_{variant}"] = config
    for subject, (test, dev) in mmlu_files.items():
        configs[f"{PREFIX}mmlu_{subject}"] = {
            "include": str(harness / "mmlu" / "default" / f"mmlu_{subject}.yaml"),
            **_local(cache, "test", test, dev=dev),
            "num_fewshot": mmlu_fewshot,
            "metric_list": _metrics("acc", "acc_norm"),
        }
    for name, config in configs.items():
        config.update(task=name, tag=[])
    return configs


def write_task_dir(folder: Path, configs: dict[str, dict[str, Any]]) -> None:
    """One ``{task}.yaml`` per task in ``folder`` (for ``TaskManager(include_path=...)``)."""
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    for name, config in configs.items():
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def split_mmlu(data: Path, folder: Path, harness: Path) -> dict[str, tuple[Path, Path]]:
    """Write each subject's test and dev rows (file order kept) to ``folder``; subject -> files.

    Refuses a subject the harness has no ``mmlu_<subject>.yaml`` for.
    """
    from actspace.core.io import write_jsonl
    from actspace.lm.tasks import read_records

    by_split: dict[str, dict[str, list[dict[str, Any]]]] = {"test": {}, "dev": {}}
    for split in by_split:
        for record in read_records(data / DATA_FILES[f"mmlu_{split}"]):
            subject = record.data.get("subject")
            by_split[split].setdefault(str(subject), []).append(record.data)
    files: dict[str, tuple[Path, Path]] = {}
    for subject, rows in by_split["test"].items():
        if not (harness / "mmlu" / "default" / f"mmlu_{subject}.yaml").is_file():
            raise ValueError(f"MMLU subject {subject!r}: the harness has no task for it")
        test, dev = folder / f"mmlu_{subject}_test.jsonl", folder / f"mmlu_{subject}_dev.jsonl"
        write_jsonl(test, rows)
        write_jsonl(dev, by_split["dev"].get(subject, []))
        files[subject] = (test, dev)
    return files


# --------------------------------------------------------------------------- the two sides


def run_harness(
    model: str,
    task_dir: Path,
    limits: dict[str, int],
    *,
    device: str,
    dtype: str,
    batch_size: int,
) -> dict[str, list[dict[str, Any]]]:
    """Run lm-eval on the tasks of ``task_dir``: task -> its logged samples, by ``doc_id``.

    ``limits`` maps each task to its limit, 0 for all documents (one ``simple_evaluate`` call
    per distinct limit).
    """
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    lm = HFLM(pretrained=model, device=device, dtype=dtype, batch_size=batch_size)
    manager = TaskManager(include_path=str(task_dir), include_defaults=False)
    out: dict[str, list[dict[str, Any]]] = {}
    for limit in sorted(set(limits.values())):
        names = [name for name, value in limits.items() if value == limit]
        result = lm_eval.simple_evaluate(
            model=lm, tasks=names, limit=limit or None, task_manager=manager, log_samples=True
        )
        if result is None:
            raise RuntimeError("lm_eval.simple_evaluate returned nothing")
        for name in names:
            out[name] = sorted(result["samples"][name], key=lambda s: s["doc_id"])
    return out


def harness_requests(task_dir: Path, limits: dict[str, int]) -> dict[str, list[dict[str, Any]]]:
    """The harness's requests without a model: task -> ``[{"doc_id", "arguments"}]`` per
    document, as ``build_all_requests`` makes them (for checking prompts quickly)."""
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(task_dir), include_defaults=False)
    out: dict[str, list[dict[str, Any]]] = {}
    for name, task in manager.load(list(limits))["tasks"].items():
        task.build_all_requests(limit=limits[name] or None, rank=0, world_size=1)
        docs: dict[int, list[tuple[str, str]]] = {}
        for instance in sorted(task.instances, key=lambda i: (i.doc_id, i.idx)):
            docs.setdefault(instance.doc_id, []).append(tuple(instance.args))
        out[name] = [{"doc_id": i, "arguments": args} for i, args in sorted(docs.items())]
    return out


def project_items(
    tasks: Sequence[str],
    data: Path,
    limit: int,
    mmlu_limit: int,
    mmlu_fewshot: int,
    mmlu_files: dict[str, tuple[Path, Path]],
) -> dict[str, list[Any]]:
    """Harness task name -> the project's items, loaded as ``prepare_task`` loads them and read
    back as ``extract`` reads them (rows round trip). MMLU reads the per-subject files that the
    harness reads (``split_mmlu``), one task per subject."""
    from actspace.lm.tasks import items_to_rows, load_task, rows_to_items

    def load(spec: dict[str, Any]) -> list[Any]:
        return rows_to_items(items_to_rows(load_task({"source": "local", **spec})))

    items: dict[str, list[Any]] = {}
    first = limit or None  # 0: every item
    if "hellaswag" in tasks:
        path = str(data / DATA_FILES["hellaswag"])
        items[PREFIX + "hellaswag"] = load({"type": "hellaswag", "path": path, "limit": first})
    for kind in ("truthfulqa_mc1", "truthfulqa_mc2"):
        if kind in tasks:
            path = str(data / DATA_FILES["truthfulqa"])
            items[PREFIX + kind] = load({"type": kind, "path": path, "limit": first})
    for subject, (test, dev) in mmlu_files.items():
        spec = {"type": "mmlu", "path": str(test), "dev_path": str(dev)}
        spec |= {"num_fewshot": mmlu_fewshot, "limit": mmlu_limit or None}
        items[f"{PREFIX}mmlu_{subject}"] = load(spec)
    return items


def run_project(
    model: str,
    items: dict[str, list[Any]],
    workdir: Path,
    *,
    device: str,
    dtype: str,
    batch_size: int,
) -> dict[str, list[dict[str, Any]]]:
    """Score the items with the project's extraction; task -> the store's score rows.

    The MMLU subjects run as one task (one store), as a study runs MMLU.
    """
    from actspace.core.store import ActivationStore
    from actspace.lm.extraction import extract_store
    from actspace.lm.models import load_model

    lm, tokenizer = load_model(model, dtype=dtype, device=device)
    groups: dict[str, list[str]] = {}
    for name in items:
        groups.setdefault(family(name), []).append(name)
    rows: dict[str, list[dict[str, Any]]] = {}
    for group, names in groups.items():
        joined = [item for name in names for item in items[name]]
        store = workdir / "project" / group
        extract_store(
            lm,
            tokenizer,
            joined,
            store,
            poolings=["last"],
            batch_size=batch_size,
            storage_dtype="float32",
            shard_size=max(len(joined), 1),
            model_name=Path(model).name,
            task_name=group,
            progress=False,
        )
        scored = ActivationStore(store).scores()
        start = 0
        for name in names:
            rows[name] = scored[start : start + len(items[name])]
            start += len(items[name])
    return rows


def family(task: str) -> str:
    """The check's task (``hellaswag``, ``mmlu``, ...) of a harness task name."""
    name = task.removeprefix(PREFIX)
    return "mmlu" if name.startswith("mmlu_") else name


# --------------------------------------------------------------------------- comparison


def argmax(values: Sequence[float]) -> int:
    """Index of the first maximum (``numpy.argmax``'s tie rule)."""
    return max(range(len(values)), key=lambda i: (values[i], -i))


def check_same_items(task: str, items: Sequence[Any], samples: Sequence[dict[str, Any]]) -> None:
    """Raise ValueError unless item ``i`` and harness document ``i`` are the same item: the same
    number of items, ``doc_id`` 0..n-1, and request strings ``(context, " " + choice)`` equal."""
    if len(items) != len(samples):
        raise ValueError(f"{task}: the project has {len(items)} items, the harness {len(samples)}")
    for index, (item, sample) in enumerate(zip(items, samples, strict=True)):
        if sample["doc_id"] != index:
            raise ValueError(f"{task}: harness document {sample['doc_id']} at position {index}")
        expected = [[item.context, " " + choice] for choice in item.choices]
        requests = [list(args) for args in sample["arguments"]]
        if requests != expected:
            where = next(
                (n for n, (a, b) in enumerate(zip(requests, expected, strict=False)) if a != b),
                min(len(requests), len(expected)),
            )
            got = requests[where] if where < len(requests) else None
            want = expected[where] if where < len(expected) else None
            raise ValueError(
                f"{task} item {index} ({item.id}): request {where} differs: harness {got!r}, "
                f"project {want!r}"
            )


def compare_item(item: Any, sample: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
    """One item's figures from both sides (``row``: the project's score row)."""
    from actspace.lm.scoring import mc2_score

    harness = [float(resp[0]) for resp in sample["filtered_resps"]]
    project = [float(value) for value in row["logliks"]]
    lengths = [float(len(choice)) for choice in item.choices]
    out: dict[str, Any] = {
        "id": item.id,
        "doc_id": sample["doc_id"],
        "label": item.label,
        "harness_logliks": harness,
        "project_logliks": project,
        "max_abs_diff": max(abs(a - b) for a, b in zip(harness, project, strict=True)),
        "harness_pred": argmax(harness),
        "project_pred": int(row["pred"]),
        "harness_pred_norm": argmax([v / n for v, n in zip(harness, lengths, strict=True)]),
        "project_pred_norm": int(row["pred_norm"]),
    }
    if "labels" in item.metadata:  # MC2: the harness's "acc" is the mc2 value
        out["harness_mc2"] = float(sample["acc"])
        out["project_mc2"] = float(row["mc2"])
        out["project_mc2_on_harness_logliks"] = mc2_score(harness, item.metadata["labels"])
    else:
        out["harness_acc"] = float(sample["acc"])
        out["project_acc"] = float(row["correct"])
        if "acc_norm" in sample:
            out["harness_acc_norm"] = float(sample["acc_norm"])
            out["project_acc_norm"] = float(row["correct_norm"])
    return out


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def summarise(rows: Sequence[dict[str, Any]], tolerance: float) -> dict[str, Any]:
    """A task's summary: the largest difference, agreements, both sides' metrics, ``ok``."""
    n = len(rows)
    norm_agree = sum(r["harness_pred_norm"] == r["project_pred_norm"] for r in rows)
    summary: dict[str, Any] = {
        "n_items": n,
        "n_choices": sum(len(row["harness_logliks"]) for row in rows),
        "max_abs_diff": max((row["max_abs_diff"] for row in rows), default=0.0),
        "pred_agreement": sum(r["harness_pred"] == r["project_pred"] for r in rows) / n,
        "pred_norm_agreement": norm_agree / n,
    }
    for side in ("harness", "project"):
        for metric in ("acc", "acc_norm", "mc2"):
            values = [row[f"{side}_{metric}"] for row in rows if f"{side}_{metric}" in row]
            if values:
                summary[f"{side}_{metric}"] = _mean(values)
    checks = [
        summary["max_abs_diff"] <= tolerance,
        summary["pred_agreement"] == 1.0,
        summary["pred_norm_agreement"] == 1.0,
    ]
    for metric in ("acc", "acc_norm"):
        if f"harness_{metric}" in rows[0]:
            same = all(r[f"harness_{metric}"] == r[f"project_{metric}"] for r in rows)
            summary[f"{metric}_identical"] = same
            checks.append(same)
    if "harness_mc2" in rows[0]:
        summary["mc2_max_abs_diff"] = max(abs(r["harness_mc2"] - r["project_mc2"]) for r in rows)
        summary["mc2_formula_max_abs_diff"] = max(
            abs(r["harness_mc2"] - r["project_mc2_on_harness_logliks"]) for r in rows
        )
        checks.append(summary["mc2_formula_max_abs_diff"] <= MC2_FORMULA_TOLERANCE)
        checks.append(summary["mc2_max_abs_diff"] <= tolerance)
    summary["ok"] = all(checks)
    return summary


def compare(
    items: dict[str, list[Any]],
    harness: dict[str, list[dict[str, Any]]],
    project: dict[str, list[dict[str, Any]]],
    tolerance: float,
) -> dict[str, Any]:
    """Check item alignment, compare every item, summarise per check task."""
    per_task: dict[str, list[dict[str, Any]]] = {}
    for name, task_items in items.items():
        samples = harness[name]
        check_same_items(name, task_items, samples)
        for item, sample, row in zip(task_items, samples, project[name], strict=True):
            if row["id"] != item.id:
                raise ValueError(f"{name}: project score row {row['id']} for item {item.id}")
            per_task.setdefault(family(name), []).append(compare_item(item, sample, row))
    return {
        "summary": {task: summarise(rows, tolerance) for task, rows in per_task.items()},
        "items": per_task,
    }


def table(summary: dict[str, dict[str, Any]]) -> str:
    """The summary as a short text table."""

    def fmt(value: Any) -> str:
        return "-" if value is None else f"{value:.4f}"

    lines = [
        f"{'task':<15} {'items':>5} {'max |diff|':>11} {'pred agree':>10} "
        f"{'harness':>8} {'project':>8}  metric  ok"
    ]
    for task, s in summary.items():
        metric = "mc2" if "harness_mc2" in s else "acc"
        lines.append(
            f"{task:<15} {s['n_items']:>5} {s['max_abs_diff']:>11.2e} {s['pred_agreement']:>10.3f} "
            f"{fmt(s.get('harness_' + metric)):>8} {fmt(s.get('project_' + metric)):>8}  "
            f"{metric:<6}  {'yes' if s['ok'] else 'NO'}"
        )
    return "\n".join(lines)


class Prepared(NamedTuple):
    """The task folder for the harness, each harness task's limit, and the project's items."""

    task_dir: Path
    limits: dict[str, int]
    items: dict[str, list[Any]]


def prepare(
    data: Path,
    workdir: Path,
    *,
    tasks: Sequence[str] = TASKS,
    limit: int = 50,
    mmlu_limit: int | None = None,
    mmlu_fewshot: int = 0,
) -> Prepared:
    """Write the harness's task YAMLs (and MMLU's per-subject files) under ``workdir`` and load
    the project's items of the same tasks."""
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown or not tasks:
        raise ValueError(f"--tasks: unknown {', '.join(unknown)}; allowed: {', '.join(TASKS)}")
    for task in tasks:
        for key in NEEDS[task]:
            if not (data / DATA_FILES[key]).is_file():
                raise ValueError(f"--data: {data / DATA_FILES[key]} not found (needed by {task})")
    mmlu_limit = limit if mmlu_limit is None else mmlu_limit
    harness_dir = harness_task_dir()
    mmlu_files = split_mmlu(data, workdir / "mmlu", harness_dir) if "mmlu" in tasks else {}
    cache = workdir / "datasets_cache"
    configs = task_configs(tasks, data, mmlu_files, mmlu_fewshot, harness_dir, cache)
    write_task_dir(workdir / "tasks", configs)
    limits = {name: mmlu_limit if family(name) == "mmlu" else limit for name in configs}
    items = project_items(tasks, data, limit, mmlu_limit, mmlu_fewshot, mmlu_files)
    return Prepared(workdir / "tasks", limits, items)


def parity(
    model: str,
    data: Path,
    *,
    tasks: Sequence[str] = TASKS,
    limit: int = 50,
    mmlu_limit: int | None = None,
    mmlu_fewshot: int = 0,
    device: str = "cpu",
    dtype: str = "float32",
    batch_size: int = 8,
    tolerance: float = 1e-3,
) -> dict[str, Any]:
    """Run both sides on the same items and compare them; the report as a dict (see module)."""
    import lm_eval

    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="lm_eval_parity_") as tmp:
        workdir = Path(tmp)
        start = time.perf_counter()
        options = {"limit": limit, "mmlu_limit": mmlu_limit, "mmlu_fewshot": mmlu_fewshot}
        prepared = prepare(data, workdir, tasks=tasks, **options)
        timings["prepare_s"] = time.perf_counter() - start
        start, cpu = time.perf_counter(), time.process_time()
        project = run_project(
            model, prepared.items, workdir, device=device, dtype=dtype, batch_size=batch_size
        )
        timings["project_s"] = time.perf_counter() - start
        timings["project_cpu_s"] = time.process_time() - cpu
        start, cpu = time.perf_counter(), time.process_time()
        harness = run_harness(
            model,
            prepared.task_dir,
            prepared.limits,
            device=device,
            dtype=dtype,
            batch_size=batch_size,
        )
        timings["harness_s"] = time.perf_counter() - start
        timings["harness_cpu_s"] = time.process_time() - cpu
    report = compare(prepared.items, harness, project, tolerance)
    report["settings"] = {
        "model": str(model),
        "data": str(data),
        "tasks": list(tasks),
        "limit": limit,
        "mmlu_limit_per_subject": limit if mmlu_limit is None else mmlu_limit,
        "mmlu_fewshot": mmlu_fewshot,
        "device": device,
        "dtype": dtype,
        "batch_size": batch_size,
        "tolerance_nats": tolerance,
        "mc2_formula_tolerance": MC2_FORMULA_TOLERANCE,
        "lm_eval_version": getattr(lm_eval, "__version__", "?"),
    }
    report["timings"] = timings
    report["ok"] = all(summary["ok"] for summary in report["summary"].values())
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a local save_pretrained folder")
    parser.add_argument("--data", required=True, type=Path, help="folder of the .jsonl.gz files")
    parser.add_argument("--limit", type=int, default=50, help="first N items per task; 0: all")
    parser.add_argument("--mmlu-limit", type=int, help="first N items per MMLU subject (--limit)")
    parser.add_argument("--mmlu-fewshot", type=int, default=0, help="MMLU shots (0)")
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated subset")
    parser.add_argument("--output", type=Path, help="write the report here (JSON)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:0 ... (cpu)")
    parser.add_argument("--dtype", default="float32", help="float32, bfloat16, float16")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--tolerance", type=float, default=1e-3, help="nats (1e-3)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    # everything is local: never wait for the hub
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    for name in ("limit", "mmlu_limit", "mmlu_fewshot"):
        if (getattr(args, name) or 0) < 0:
            parser.error(f"--{name.replace('_', '-')} must be 0 or more")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from actspace.lm.models import ModelLoadError

    tasks = [task.strip() for task in args.tasks.split(",") if task.strip()]
    keys = ("limit", "mmlu_limit", "mmlu_fewshot", "device", "dtype", "batch_size", "tolerance")
    try:
        report = parity(args.model, args.data, tasks=tasks, **{k: getattr(args, k) for k in keys})
    except (ValueError, ModelLoadError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=1, allow_nan=False) + "\n")
    print(table(report["summary"]))
    timings = report["timings"]
    print(
        f"project {timings['project_s']:.1f} s, harness {timings['harness_s']:.1f} s; "
        f"parity {'OK' if report['ok'] else 'FAILED'}"
        + (f" -> {args.output}" if args.output else "")
    )
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
