"""Benchmark one-pass extraction against the same pass without capture and naive per-choice scoring.

Runs by hand (not in CI)::

    python benchmarks/bench_extract.py                      # organism-shaped + GPT-2-small-shaped
    python benchmarks/bench_extract.py --organism results/models/organism_a --n-items 64

Models: (a) a built-in organism folder (``--organism``), or, without one, a random-initialised model
of the organism's shape (``actspace.world.organisms.organism_config("gpt2")``); (b) a
random-initialised ``GPT2Config()`` model (124M parameters). Items are HellaSwag-shaped token
sequences (a context of about 80 tokens, four endings of about 20), drawn with a fixed seed.

Modes, each over the same length-sorted batches:

- ``capture``: :func:`actspace.lm.forward.score_batch` as extraction runs it (context once through
  the KV cache, all choices batched, residual stream pooled and copied to the CPU);
- ``no-capture``: the same two forward calls without hooks or pooling;
- ``naive``: one sequence per (context, choice), batched, logits only over the choice tokens.

Goals: capture costs at most 5% over no-capture; shared prefix at least 1.5x the naive speed.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence

import numpy as np
import psutil
import torch
import transformers

from actspace.lm.forward import EncodedItem, score_batch
from actspace.lm.models import ModelLoadError, load_model, resolve_device, resolve_dtype

MODES = ("capture", "no-capture", "naive")
CAPTURE_GOAL = 0.05
SPEEDUP_GOAL = 1.5


def make_items(
    n_items: int,
    vocab: int,
    *,
    seed: int = 0,
    context: int = 80,
    ending: int = 20,
    n_choices: int = 4,
) -> list[EncodedItem]:
    """HellaSwag-shaped items: contexts of ``context`` ±10 tokens, endings of ``ending`` ±5."""
    rng = np.random.default_rng(seed)
    items = []
    for index in range(n_items):
        n_ctx = int(rng.integers(context - 10, context + 11))
        ctx = rng.integers(3, vocab, size=n_ctx).tolist()
        choices = [
            rng.integers(3, vocab, size=int(rng.integers(ending - 5, ending + 6))).tolist()
            for _ in range(n_choices)
        ]
        items.append(EncodedItem(index, ctx, choices))
    return items


def batches(items: Sequence[EncodedItem], batch_size: int) -> list[list[EncodedItem]]:
    """Length-sorted batches, as extraction forms them."""
    order = sorted(items, key=lambda it: (-len(it.context), -max(map(len, it.choices)), it.index))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


@torch.no_grad()
def naive_batch(model: torch.nn.Module, batch: Sequence[EncodedItem]) -> list[list[float]]:
    """One left-padded sequence per (context, choice), one forward per batch: no shared prefix."""
    device = next(model.parameters()).device
    seqs = [(item.context + choice, len(choice)) for item in batch for choice in item.choices]
    width = max(len(seq) for seq, _ in seqs)
    keep = max(n for _, n in seqs) + 1
    ids = torch.zeros((len(seqs), width), dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, (seq, _) in enumerate(seqs):
        ids[row, width - len(seq) :] = torch.tensor(seq)
        mask[row, width - len(seq) :] = 1
    pos = (mask.cumsum(1) - 1).clamp(min=0)
    ids, mask, pos = ids.to(device), mask.to(device), pos.to(device)
    logits = model(
        input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False, logits_to_keep=keep
    ).logits.float()
    # logits[:, j] predicts token width - keep + j + 1
    logprobs = logits[:, :-1].log_softmax(-1).gather(2, ids[:, width - keep + 1 :, None])[..., 0]
    totals = []
    for row, (_, n) in enumerate(seqs):
        totals.append(float(logprobs[row, keep - 1 - n :].double().sum()))
    out, slot = [], 0
    for item in batch:
        out.append(totals[slot : slot + len(item.choices)])
        slot += len(item.choices)
    return out


class PeakMemory:
    """Peak memory per mode: CUDA allocated on a GPU, else process RSS sampled every 5 ms."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak_mb: dict[str, float] = {}
        self.mode: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        process = psutil.Process(os.getpid())
        while not self._stop.is_set():
            mode = self.mode
            if mode is not None:
                rss = process.memory_info().rss / 2**20
                self.peak_mb[mode] = max(self.peak_mb.get(mode, 0.0), rss)
            self._stop.wait(0.005)

    def __enter__(self) -> PeakMemory:
        if self.device.type != "cuda":
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def start(self, mode: str) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        self.mode = mode

    def stop(self) -> None:
        mode = self.mode
        if self.device.type == "cuda" and mode is not None:
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device) / 2**20
            self.peak_mb[mode] = max(self.peak_mb.get(mode, 0.0), peak)
        self.mode = None


def runners(model: torch.nn.Module) -> dict[str, Callable[[list[EncodedItem]], list[list[float]]]]:
    """The three modes, each scoring one batch and returning its log-likelihoods."""
    return {
        "capture": lambda batch: score_batch(model, batch, capture=True).logliks,
        "no-capture": lambda batch: score_batch(model, batch, capture=False).logliks,
        "naive": lambda batch: naive_batch(model, batch),
    }


def bench_model(
    name: str,
    model: torch.nn.Module,
    *,
    n_items: int,
    batch_size: int,
    repeats: int,
    device: torch.device,
) -> dict[str, object]:
    """Time every mode on every batch ``repeats`` times, modes interleaved batch by batch.

    A mode's time is the sum over batches of its fastest run of each batch, and the modes take
    turns going first, so that a burst of load from other processes on the machine does not fall
    on one mode only.
    """
    items = make_items(n_items, model.config.vocab_size)
    plan = batches(items, batch_size)
    item_tokens = sum(item.n_tokens for item in items)
    run = runners(model)
    for mode in MODES:  # warm-up
        run[mode](plan[0])
    best = {mode: [float("inf")] * len(plan) for mode in MODES}
    logliks: dict[str, list[list[float]]] = {mode: [] for mode in MODES}
    with PeakMemory(device) as memory:
        for repeat in range(repeats):
            for number, batch in enumerate(plan):
                turn = (repeat + number) % len(MODES)
                for mode in MODES[turn:] + MODES[:turn]:
                    memory.start(mode)
                    start = time.perf_counter()
                    scores = run[mode](batch)
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
                    took = time.perf_counter() - start
                    memory.stop()
                    best[mode][number] = min(best[mode][number], took)
                    if repeat == 0:
                        logliks[mode].extend(scores)
    seconds = {mode: sum(best[mode]) for mode in MODES}
    params = sum(p.numel() for p in model.parameters())
    diff = max(
        abs(a - b)
        for x, y in zip(logliks["capture"], logliks["naive"], strict=True)
        for a, b in zip(x, y, strict=True)
    )
    rows = [
        {
            "model": name,
            "params_m": params / 1e6,
            "mode": mode,
            "items_per_s": n_items / seconds[mode],
            "tokens_per_s": item_tokens / seconds[mode],
            "peak_mb": memory.peak_mb.get(mode, float("nan")),
        }
        for mode in MODES
    ]
    overhead = seconds["capture"] / seconds["no-capture"] - 1
    speedup = seconds["naive"] / seconds["capture"]
    return {"rows": rows, "overhead": overhead, "speedup": speedup, "max_loglik_diff": diff}


def build_models(
    args: argparse.Namespace, device: torch.device
) -> list[tuple[str, Callable[[], torch.nn.Module], int]]:
    """``(name, build, n_items)`` per requested model; models are built one at a time, so the
    peak memory of a mode counts only the model it runs."""
    dtype = resolve_dtype(args.dtype, device)
    models: list[tuple[str, Callable[[], torch.nn.Module], int]] = []

    def random_model(config: transformers.PretrainedConfig) -> torch.nn.Module:
        torch.manual_seed(0)
        return transformers.AutoModelForCausalLM.from_config(config).to(device, dtype).eval()

    if "organism" in args.models:
        if args.organism:
            name = f"organism {os.path.basename(args.organism.rstrip('/'))}"
            organism, _ = load_model(args.organism, dtype=args.dtype, device=str(device))
            build = lambda: organism  # noqa: E731 (small: loaded now, so a bad path fails early)
        else:
            from actspace.world.organisms import organism_config

            name = "organism-shaped gpt2 (random)"
            config = organism_config("gpt2", "default", vocab_size=2048)
            build = lambda: random_model(config)  # noqa: E731
        models.append((name, build, args.n_items))
    if "gpt2" in args.models:
        gpt2 = transformers.GPT2Config()
        models.append(("gpt2-small-shaped (random)", lambda: random_model(gpt2), args.n_items_gpt2))
    return models


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--organism", help="a built-in organism folder (results/models/{name})")
    parser.add_argument("--models", default="organism,gpt2", help="comma-separated: organism,gpt2")
    parser.add_argument("--n-items", type=int, default=64, help="items for the organism")
    parser.add_argument(
        "--n-items-gpt2", type=int, default=16, help="items for the GPT-2-small-shaped model"
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3, help="runs per batch and mode")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    args = parser.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(args.models) - {"organism", "gpt2"})
    if unknown:
        sys.exit(f"error: unknown --models {', '.join(unknown)}; allowed: organism, gpt2")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        device = resolve_device(args.device)
        models = build_models(args, device)
    except (ValueError, ModelLoadError) as error:
        sys.exit(f"error: {error}")

    header = (
        f"{'model':30} {'params':>7} {'items':>5} {'mode':11} {'items/s':>9} {'tokens/s':>9} "
        f"{'peak MB':>8}"
    )
    print(
        f"device={device} threads={torch.get_num_threads()} batch_size={args.batch_size} "
        f"repeats={args.repeats} (a mode's time: the sum of its fastest run of each batch)"
    )
    print(header)
    print("-" * len(header))
    summaries = []
    for name, build, n_items in models:
        model = build()
        result = bench_model(
            name,
            model,
            n_items=n_items,
            batch_size=args.batch_size,
            repeats=args.repeats,
            device=device,
        )
        for row in result["rows"]:
            print(
                f"{name[:30]:30} {row['params_m']:6.1f}M {n_items:5d} {row['mode']:11} "
                f"{row['items_per_s']:9.2f} {row['tokens_per_s']:9.0f} {row['peak_mb']:8.0f}"
            )
        summaries.append((name, result))
        del model
    print()
    for name, result in summaries:
        overhead, speedup = result["overhead"], result["speedup"]
        print(
            f"{name}: capture overhead {overhead:+.1%} (goal <= {CAPTURE_GOAL:.0%}: "
            f"{'met' if overhead <= CAPTURE_GOAL else 'NOT met'}); shared prefix {speedup:.2f}x "
            f"naive (goal >= {SPEEDUP_GOAL}x: {'met' if speedup >= SPEEDUP_GOAL else 'NOT met'}); "
            f"max |loglik diff| vs naive {result['max_loglik_diff']:.1e}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
