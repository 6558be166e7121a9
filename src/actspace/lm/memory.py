"""Out-of-memory back-off: run batches, halve the batch size when the device runs out of memory.

The items of a shard run longest first, so an out-of-memory error shows up on the first batch; the
batch is retried at half the size (never growing back) until it fits or one item alone does not.
The batch size is a ceiling: a ``take`` function may form smaller batches (extraction bounds their
padding, :func:`actspace.lm.batching.leading_batch`).
"""

from __future__ import annotations

import logging
import resource
from collections.abc import Callable, Sequence

import torch

from actspace.lm.forward import BatchResult, EncodedItem

log = logging.getLogger(__name__)


def is_out_of_memory(error: BaseException) -> bool:
    """True for CUDA/MPS/CPU allocator out-of-memory errors."""
    if isinstance(error, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


def free_memory() -> None:
    """Give cached device memory back (CUDA), so that a smaller batch can be allocated."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def peak_memory_mb(device: torch.device | None = None) -> float:
    """Peak memory so far: CUDA allocated on a GPU device, else the process's peak RSS."""
    if device is not None and device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


class ExtractionOutOfMemory(RuntimeError):
    """Out of memory even with one item per batch: the step cannot go on as configured."""


class Backoff:
    """Holds the current batch size; halves it on out-of-memory errors (never grows back)."""

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self.retries = 0

    def run(
        self,
        order: Sequence[EncodedItem],
        fn: Callable[[Sequence[EncodedItem]], BatchResult],
        on_batch: Callable[[Sequence[EncodedItem], BatchResult], None],
        take: Callable[[Sequence[EncodedItem], int], int] | None = None,
    ) -> None:
        """Run ``fn`` over ``order`` in batches of at most the current size; ``on_batch`` takes
        each. ``take(rest, ceiling)`` says how many leading items of ``rest`` form the next batch
        (default: ``ceiling``)."""
        position = 0
        while position < len(order):
            rest = order[position:]
            count = self.batch_size if take is None else take(rest, self.batch_size)
            batch = rest[: max(1, min(count, self.batch_size))]
            failed = False
            try:
                result = fn(batch)
            except RuntimeError as error:
                if not is_out_of_memory(error):
                    raise
                if self.batch_size == 1:
                    raise ExtractionOutOfMemory(
                        f"out of memory with batch size 1 (item {batch[0].index}, "
                        f"{batch[0].n_tokens} tokens); use a smaller --dtype, --max-length or a "
                        f"larger device"
                    ) from error
                failed = True
            if failed:  # outside the except block, so the failed batch's tensors can be freed
                free_memory()
                self.batch_size = max(1, self.batch_size // 2)
                self.retries += 1
                log.warning("out of memory; retrying with batch size %d", self.batch_size)
                continue
            on_batch(batch, result)
            position += len(batch)
