"""Atomic writes and the provenance every result records.

Every output of the workflow goes through these helpers, so that a killed job never leaves a
half-written file behind: data are written to a temporary file in the same folder and moved into
place with ``os.replace``, which is atomic on POSIX file systems.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import math
import os
import platform
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from actspace.core.results import now

#: Packages whose versions go into every ``config.json`` and ``meta.json``.
TRACKED_PACKAGES = (
    "actspace",
    "torch",
    "transformers",
    "tokenizers",
    "datasets",
    "safetensors",
    "scikit-learn",
    "scipy",
    "statsmodels",
    "numpy",
    "snakemake",
)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place only if the block succeeds."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp creates files readable by the owner only; give the result the usual mode.
        if tmp.exists():
            os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def _json_default(value: Any) -> Any:
    """Make numpy scalars, arrays and paths JSON-serialisable."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"object of type {type(value).__name__} is not JSON serialisable")


def _finite(value: Any) -> Any:
    """Replace NaN and infinities by None so the JSON stays standard."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def to_json(obj: Any, *, indent: int | None = 2) -> str:
    """Serialise ``obj`` as standard JSON (NaN becomes null, numpy values become lists)."""
    plain = json.loads(json.dumps(obj, default=_json_default))
    return json.dumps(_finite(plain), indent=indent, sort_keys=False, allow_nan=False)


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    atomic_write_text(path, to_json(obj) + "\n")


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file."""
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def write_jsonl(path: str | os.PathLike[str], rows: Iterable[dict[str, Any]]) -> None:
    """Write one JSON object per line to ``path`` atomically."""
    text = "".join(to_json(row, indent=None) + "\n" for row in rows)
    atomic_write_text(path, text)


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read a JSON Lines file (optionally gzip-compressed), naming the line of any bad record."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    rows: list[dict[str, Any]] = []
    with opener(path, "rt", encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}: line {number} is not valid JSON ({error.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}: line {number} is not a JSON object")
            rows.append(row)
    return rows


def git_commit(start: str | os.PathLike[str] | None = None) -> str | None:
    """The commit of the checkout that holds ``start`` (default: this file), or None."""
    folder = Path(start) if start is not None else Path(__file__).resolve().parent
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=folder,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages that shape the results."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def provenance() -> dict[str, Any]:
    """Timestamp, package versions and git commit, for ``config.json`` and ``meta.json``."""
    return {
        "timestamp": now(),
        "versions": package_versions(),
        "git_commit": git_commit(),
        "host": platform.node(),
    }


def write_experiment(
    out_dir: str | os.PathLike[str],
    results: dict[str, Any],
    config: dict[str, Any],
    summary: str,
) -> None:
    """Write an experiment folder: results.json, config.json (with provenance), summary.md.

    ``summary.md`` is written last, so a folder whose summary exists is complete.
    """
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder / "results.json", results)
    atomic_write_json(folder / "config.json", {**config, "provenance": provenance()})
    atomic_write_text(folder / "summary.md", summary.rstrip() + "\n")
