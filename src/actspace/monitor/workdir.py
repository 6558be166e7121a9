"""What the working directory tells about a run: Snakemake's markers and locks, progress files.

* Snakemake's incomplete markers (``.snakemake/incomplete/``, one per output of a job that started
  and has not finished) and its locks (``.snakemake/locks/``, held while a run is going);
* the progress files the long steps write (:mod:`actspace.core.progress`). A job's progress file
  mirrors its log file: ``results/logs/{rule}/{wildcards}.log`` has
  ``results/progress/{rule}/{wildcards}.json``.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import platform
from pathlib import Path
from typing import Any

#: Where the long steps write their progress files (relative to the working directory).
PROGRESS_DIR = "results/progress"
LOG_DIR = "results/logs"


def incomplete_outputs(workdir: str | os.PathLike[str]) -> dict[str, float]:
    """Outputs that Snakemake has marked incomplete -> when the marker was made (Unix time).

    Reads the file persistence backend (Snakemake's default): one file per output under
    ``.snakemake/incomplete/``, named by the URL-safe base64 of the output path and split into
    ``@``-prefixed folders where the name is too long for the file system.
    """
    root = Path(workdir) / ".snakemake" / "incomplete"
    found: dict[str, float] = {}
    if not root.is_dir():
        return found
    for dirpath, _, files in os.walk(root):
        for name in files:
            marker = Path(dirpath) / name
            parts = marker.relative_to(root).parts
            encoded = "".join(part.removeprefix("@") for part in parts)
            try:
                path = base64.urlsafe_b64decode(encoded.encode()).decode()
                found[path] = marker.stat().st_mtime
            except (binascii.Error, UnicodeDecodeError, ValueError, OSError):
                continue  # "migration_underway" and other non-markers
    return found


def snakemake_locked(workdir: str | os.PathLike[str]) -> bool:
    """Whether a Snakemake run holds the directory (its lock files exist).

    A run killed with SIGKILL leaves its locks behind (``snakemake --unlock`` removes them), so
    this can say yes after such a kill.
    """
    locks = Path(workdir) / ".snakemake" / "locks"
    return locks.is_dir() and any(locks.glob("*.lock"))


def snakemake_process_running(workdir: str | os.PathLike[str]) -> bool | None:
    """Whether a Snakemake process works in ``workdir`` (Linux ``/proc``; None elsewhere).

    Tells a live run's locks from those a killed run left behind. Snakemake changes into its
    working directory, so its ``cwd`` is the workflow folder; processes started with
    ``--nolock`` (``status.py``'s own queries) do not count.
    """
    proc = Path("/proc")
    if not proc.is_dir():
        return None
    target = Path(workdir).resolve()
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
            if not any(b"snakemake" in part for part in command) or b"--nolock" in command:
                continue
            if Path(os.readlink(entry / "cwd")).resolve() == target:
                return True
        except OSError:  # gone, or another user's
            continue
    return False


def run_in_progress(workdir: str | os.PathLike[str]) -> tuple[bool, bool]:
    """``(running, stale_lock)``: a Snakemake run holds ``workdir``; locks without a run."""
    locked = snakemake_locked(workdir)
    if not locked:
        return False, False
    alive = snakemake_process_running(workdir)
    return alive is not False, alive is False


def progress_path_for(log: str, *, log_dir: str = LOG_DIR, progress_dir: str = PROGRESS_DIR) -> str:
    """``results/logs/extract/m/t.log`` -> ``results/progress/extract/m/t.json``."""
    relative = log.removeprefix(log_dir.rstrip("/") + "/") if log.startswith(log_dir) else log
    return f"{progress_dir.rstrip('/')}/{Path(relative).with_suffix('.json').as_posix()}"


def read_progress(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """A progress file's record, or None when it is missing or unreadable (being replaced)."""
    try:
        with open(path, encoding="utf-8") as handle:
            record = json.load(handle)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def process_alive(record: dict[str, Any]) -> bool | None:
    """Whether the process that writes ``record`` lives; None when it runs on another host."""
    pid, host = record.get("pid"), record.get("host")
    if not isinstance(pid, int) or host != platform.node():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return None
    return True
