"""Peak memory of one extraction batch with a 262k vocabulary: full logits against the LM head
only at scored positions.

Runs by hand (not in CI)::

    python benchmarks/bench_head_memory.py                  # 8 HellaSwag-shaped items
    python benchmarks/bench_head_memory.py --n-items 16 --hidden 128

Model: a random-initialised Gemma-3-like text config (``Gemma3TextConfig``: 262,144-token
vocabulary, tied embeddings, small hidden size and 2 layers), so the LM head dominates the weights
as it does in Gemma-3-270M. Items: HellaSwag-shaped token ids (a context of about 80 tokens, four
endings of about 20), drawn with a fixed seed.

Modes, each in its own subprocess (so that one's peak cannot hide the other's):

- ``before``: :func:`actspace.lm.forward.score_batch` as extraction ran it before issue 18: every
  choice in one continuation pass padded to the longest (``tolerance=inf``), logits of every
  position (``full_logits=True``);
- ``after``: as extraction runs it now: choices in length groups, the head only at scored positions.

Memory is resident set size (RSS, Linux). Each mode first scores one item (library set-up, not
counted), then the batch; the batch's working memory is the peak RSS while it runs (``VmHWM`` of
``/proc/self/status``, reset through ``/proc/self/clear_refs``) minus the RSS just before it. The
children run with ``MALLOC_MMAP_THRESHOLD_=131072`` so that glibc returns freed tensors to the
system and RSS follows the live tensors. Peak = the model's weight bytes + the batch's working
memory; goal: peak within 1.5x the weights plus one batch's stored activations (pooled and
choice-end states). "process" is the peak RSS above the RSS before the model was built (library
state included).
Prints figures, asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time

import numpy as np
import psutil
import torch
import transformers

from actspace.lm.forward import EncodedItem, score_batch

GOAL = 1.5
MODES = {
    "before": dict(tolerance=math.inf, full_logits=True),
    "after": dict(),
}


def make_items(n_items: int, vocab: int, seed: int = 0) -> list[EncodedItem]:
    """HellaSwag-shaped items: contexts of 70-90 tokens, four endings of 15-25."""
    rng = np.random.default_rng(seed)
    items = []
    for index in range(n_items):
        context = rng.integers(3, vocab, size=int(rng.integers(70, 91))).tolist()
        choices = [
            rng.integers(3, vocab, size=int(rng.integers(15, 26))).tolist() for _ in range(4)
        ]
        items.append(EncodedItem(index, context, choices))
    return items


def make_model(vocab: int, hidden: int) -> torch.nn.Module:
    config = transformers.Gemma3TextConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=hidden // 4,
        max_position_embeddings=512,
        sliding_window=64,
    )
    torch.manual_seed(0)
    return transformers.AutoModelForCausalLM.from_config(config).eval()


def reset_peak_rss() -> None:
    """Start the peak RSS afresh from the current RSS (Linux: ``echo 5 > clear_refs``)."""
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def peak_rss() -> int:
    """Peak RSS in bytes since the last :func:`reset_peak_rss` (``VmHWM``)."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def run_mode(mode: str, n_items: int, vocab: int, hidden: int) -> dict[str, float]:
    """One mode in this process: weight, activation and peak bytes, seconds."""
    torch.set_num_threads(1)
    process = psutil.Process()
    base = process.memory_info().rss
    model = make_model(vocab, hidden)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    items = make_items(n_items, vocab)
    score_batch(model, items[:1], **MODES[mode])  # warm-up: library set-up
    before = process.memory_info().rss
    reset_peak_rss()
    start = time.perf_counter()
    result = score_batch(model, items, **MODES[mode])
    seconds = time.perf_counter() - start
    working = peak_rss() - before
    peak = weights + working
    activations = sum(t.numel() * t.element_size() for t in result.pooled.values())
    activations += result.choice_end.numel() * result.choice_end.element_size()
    return {
        "weights": weights,
        "activations": activations,
        "peak": peak,
        "working": working,
        "process": peak_rss() - base,
        "seconds": seconds,
        "forward_passes": result.forward_passes,
        "processed_tokens": result.processed_tokens,
        "loglik_0": result.logliks[0][0],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-items", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=262_144)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--mode", choices=sorted(MODES), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.mode:  # the child: one mode, figures as JSON
        print(json.dumps(run_mode(args.mode, args.n_items, args.vocab, args.hidden)))
        return
    mb = 2**20
    print(
        f"Gemma-3-like, vocab {args.vocab:,}, hidden {args.hidden}, 2 layers; "
        f"{args.n_items} HellaSwag-shaped items in one batch; CPU, float32, 1 thread"
    )
    print("memory (RSS): peak = weights + the batch's working memory (peak RSS during the batch")
    print("minus RSS before it, after a one-item warm-up); process = peak RSS above pre-model RSS")
    figures = {}
    for mode in MODES:
        child = [sys.executable, __file__, "--mode", mode, "--n-items", str(args.n_items)]
        child += ["--vocab", str(args.vocab), "--hidden", str(args.hidden)]
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
        out = subprocess.run(child, capture_output=True, text=True, check=True, env=env).stdout
        figures[mode] = json.loads(out.strip().splitlines()[-1])
    for mode, f in figures.items():
        budget = GOAL * f["weights"] + f["activations"]
        print(
            f"{mode:>6}: peak {f['peak'] / mb:7.1f} MB (working {f['working'] / mb:.1f}, process "
            f"{f['process'] / mb:.1f}) | weights {f['weights'] / mb:.1f} MB | "
            f"activations {f['activations'] / mb:.2f} MB | goal <= {budget / mb:.1f} MB: "
            f"{'met' if f['peak'] <= budget else 'not met'} | {f['forward_passes']} forward "
            f"calls, {f['processed_tokens']} token slots, {f['seconds']:.2f} s"
        )
    gap = abs(figures["before"]["loglik_0"] - figures["after"]["loglik_0"])
    print(f"first log-likelihood, before vs after: |difference| = {gap:.2e}")


if __name__ == "__main__":
    main()
