"""A small progress file for long steps, read by ``scripts/status.py`` while a study runs.

A long step (extraction, organism training, the patching sweeps, the steering grid) counts its
items through a :class:`Progress`; every ``every_s`` seconds at most, and once at the end, the
counts are written atomically to a JSON file::

    {"step": "extract tiny_gpt2/facts", "state": "running", "items_done": 512, "total": 2000,
     "rate_per_s": 41.3, "eta_s": 36.0, "started": 1795249183.6, "updated": 1795249196.0,
     "last_checkpoint": "shard 2/8", "peak_rss_mb": 812.4, ...}

``started`` and ``updated`` are Unix times (seconds); ``rate_per_s`` counts only the items done in
this process (a resumed run's earlier items are in ``items_done`` but not in the rate), so the
ETA is honest after a restart. The state is ``running`` while the ``with`` block runs, ``done`` when
it ends normally and ``failed`` when an exception leaves it (the exception is re-raised).

The file is a side file for people and for ``status.py``, never a Snakemake output: a failure to
write it is reported as a warning and never fails the step. Updating costs a clock reading; the
file is written only when ``every_s`` has passed, so a step may call :meth:`Progress.update`
once per item. (tqdm computes the same rate for a terminal bar; the progress file exists because
a job's terminal is its log file, which is not where one looks for an ETA.)
"""

from __future__ import annotations

import contextlib
import os
import platform
import resource
import sys
import time
import warnings
from collections.abc import Callable
from types import TracebackType
from typing import Any

from actspace.core.io import atomic_write_json

#: States a progress file can be in.
STATES = ("running", "done", "failed")


def peak_rss_mb() -> float:
    """This process's peak resident memory in MiB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def _peak_gpu_mb() -> float | None:
    """Peak CUDA memory allocated by torch, if torch is loaded and has used a GPU; else None.

    torch is not imported here: a step that never loaded it has no GPU memory to report.
    """
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    try:
        if not torch.cuda.is_initialized():
            return None
        return torch.cuda.max_memory_allocated() / 2**20
    except Exception:  # noqa: BLE001 - a progress file must never fail the step
        return None


class Progress:
    """Count a long step's items and keep a progress file up to date; a context manager.

    ``total`` may be left None when only the library call knows it (it then calls
    :meth:`set_total`). ``clock`` (monotonic seconds) and ``wall_clock`` (Unix seconds) are
    injectable for tests.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        total: int | None = None,
        *,
        step: str = "",
        every_s: float = 2.0,
        initial: int = 0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if every_s < 0:
            raise ValueError(f"every_s must not be negative, got {every_s}")
        self.path = os.fspath(path)
        self.step = step
        self.every_s = float(every_s)
        self.total = None if total is None else int(total)
        self.items_done = int(initial)
        self.state = "running"
        self.last_checkpoint: str | None = None
        self.error: str | None = None
        #: Files written so far (tests count them; a failed write does not count).
        self.n_writes = 0
        self._clock = clock
        self._wall_clock = wall_clock
        self._initial = int(initial)
        self._created = self._t0 = clock()  # _t0: where the rate starts (see set_total)
        self._started = wall_clock()
        self._last_write: float | None = None
        self._warned = False

    # ------------------------------------------------------------------------------- counting
    def set_total(self, total: int, *, initial: int | None = None) -> None:
        """Set the number of items; ``initial`` items already done (a resumed run) are counted
        as done but not in the rate, which restarts from now."""
        self.total = int(total)
        if initial is not None:
            self.items_done = self._initial = int(initial)
            self._t0 = self._clock()
        self._maybe_write(force=True)

    def update(self, n: int = 1, checkpoint: str | None = None) -> None:
        """Count ``n`` more items done (0 to record only a checkpoint); cheap, call it freely."""
        self.items_done += n
        if checkpoint is not None:
            self.last_checkpoint = str(checkpoint)
        self._maybe_write()

    # ------------------------------------------------------------------------------- figures
    @property
    def elapsed_s(self) -> float:
        """Seconds since the Progress was made."""
        return max(0.0, self._clock() - self._created)

    @property
    def rate_per_s(self) -> float | None:
        """Items per second done by this process so far; None before the first item."""
        elapsed, done = self._clock() - self._t0, self.items_done - self._initial
        return done / elapsed if elapsed > 0 and done > 0 else None

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the current rate; 0 when done; None when unknown."""
        if self.state == "done" or (self.total is not None and self.items_done >= self.total):
            return 0.0
        rate = self.rate_per_s
        if self.total is None or rate is None:
            return None
        return (self.total - self.items_done) / rate

    def record(self) -> dict[str, Any]:
        """What the progress file holds now."""
        rate, eta = self.rate_per_s, self.eta_s
        return {
            "step": self.step,
            "state": self.state,
            "items_done": self.items_done,
            "total": self.total,
            "rate_per_s": None if rate is None else round(rate, 4),
            "eta_s": None if eta is None else round(eta, 1),
            "elapsed_s": round(self.elapsed_s, 1),
            "started": round(self._started, 3),
            "updated": round(self._wall_clock(), 3),
            "last_checkpoint": self.last_checkpoint,
            "peak_rss_mb": round(peak_rss_mb(), 1),
            "peak_gpu_mb": _peak_gpu_mb(),
            "error": self.error,
            "pid": os.getpid(),
            "host": platform.node(),
        }

    # ------------------------------------------------------------------------------- writing
    def _maybe_write(self, *, force: bool = False) -> None:
        now = self._clock()
        if force or self._last_write is None or now - self._last_write >= self.every_s:
            self._last_write = now
            self.write()

    def write(self) -> None:
        """Write the file now; an I/O error is warned about once and otherwise ignored."""
        try:
            atomic_write_json(self.path, self.record())
        except OSError as error:
            if not self._warned:
                self._warned = True
                warnings.warn(
                    f"progress file {self.path} could not be written ({error}); the step goes on "
                    "without it",
                    RuntimeWarning,
                    stacklevel=3,
                )
            return
        self.n_writes += 1

    def close(self, state: str = "done", error: str | None = None) -> None:
        """Record the final state and write the file one last time."""
        if state not in STATES:
            raise ValueError(f"state must be one of {STATES}, got {state!r}")
        self.state = state
        self.error = error
        self._last_write = self._clock()
        self.write()

    def __enter__(self) -> Progress:
        self._maybe_write(force=True)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        succeeded = exc_type is None or (
            issubclass(exc_type, SystemExit) and getattr(exc, "code", None) in (0, None)
        )
        if succeeded:
            self.close("done")
        else:
            name = exc_type.__name__
            self.close("failed", error=f"{name}: {exc}" if str(exc) else name)
        # returning None re-raises any exception


def optional_progress(
    path: str | os.PathLike[str] | None,
    total: int | None = None,
    *,
    step: str = "",
    every_s: float = 2.0,
) -> contextlib.AbstractContextManager[Progress | None]:
    """``Progress(path, ...)`` when a path is given, else a context that yields None.

    For scripts: ``with optional_progress(args.progress_file, step=...) as progress:`` and pass
    ``progress`` on to the library, which accepts None.
    """
    if path is None or os.fspath(path) == "":
        return contextlib.nullcontext(None)
    return Progress(path, total, step=step, every_s=every_s)
