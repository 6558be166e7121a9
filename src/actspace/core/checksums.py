"""sha256 checksums of an activation store's files, recorded in ``meta.json`` and checked on open.

Extraction records, per file, its size and the sha256 of all its bytes; a file larger than
:data:`FULL_CHECK_BYTES` also gets the sha256 of a fixed sample of it (its first bytes up to the
end of the safetensors header, and :data:`SAMPLE_BLOCKS` blocks of :data:`SAMPLE_BLOCK_BYTES`
spread evenly from its first to its last byte; the sample's parameters are recorded beside it).

Opening a store checks the size of every file, then either every byte (``full``, or any file up
to :data:`FULL_CHECK_BYTES`) or the sample (``fast``, the default, for larger files): a fast check
never hashes more than about 64 MiB per file. ``ACTSPACE_STORE_CHECK=full`` (or
``ActivationStore(path, check="full")``) makes every open read every byte.
"""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path
from typing import Any

#: Files up to this size are always hashed whole.
FULL_CHECK_BYTES = 64 * 1024 * 1024
#: The sampled check of a larger file: this many blocks of this size, first and last included.
SAMPLE_BLOCK_BYTES = 1024 * 1024
SAMPLE_BLOCKS = 64
#: How a store is checked when it is opened: the environment variable and its allowed values.
CHECK_ENV = "ACTSPACE_STORE_CHECK"
CHECK_MODES = ("fast", "full")
_READ_CHUNK = 8 * 1024 * 1024


class StoreCorruption(ValueError):
    """A store file differs from what ``meta.json`` recorded when it was written."""


def check_mode(check: str | None = None) -> str:
    """The check to run: ``check`` if given, else ``$ACTSPACE_STORE_CHECK``, else ``fast``."""
    if check is None:
        check = os.environ.get(CHECK_ENV, "").strip().lower() or "fast"
        where = f"environment variable {CHECK_ENV}"
    else:
        where = "store check"
    if check not in CHECK_MODES:
        raise ValueError(f"{where}: {check!r} is not allowed (fast or full)")
    return check


def _head_bytes(path: Path, size: int) -> int:
    """Bytes up to the end of a safetensors header (0 for other files or a broken header)."""
    if path.suffix != ".safetensors" or size < 8:
        return 0
    with open(path, "rb") as handle:
        (header_len,) = struct.unpack("<Q", handle.read(8))
    return min(size, 8 + header_len)


def _sample_ranges(size: int, head: int, block: int, blocks: int) -> list[tuple[int, int]]:
    """The byte ranges of the sample: ``[0, head)`` and ``blocks`` evenly spaced blocks."""
    ranges = [(0, head)] if head else []
    block = min(block, size)
    last = size - block
    for number in range(blocks):
        start = last * number // max(blocks - 1, 1)
        ranges.append((start, start + block))
    return ranges


def _sha256(path: Path, ranges: list[tuple[int, int]] | None = None) -> str:
    """sha256 of the whole file, or of the concatenated byte ``ranges``."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        if ranges is None:
            while chunk := handle.read(_READ_CHUNK):
                digest.update(chunk)
        else:
            for start, stop in ranges:
                handle.seek(start)
                digest.update(handle.read(stop - start))
    return digest.hexdigest()


def file_checksum(path: str | os.PathLike[str]) -> dict[str, Any]:
    """What ``meta.json`` records of one file: ``bytes``, ``sha256`` and, above
    :data:`FULL_CHECK_BYTES`, the ``sample`` the fast check compares."""
    path = Path(path)
    size = path.stat().st_size
    record: dict[str, Any] = {"bytes": size, "sha256": _sha256(path)}
    if size > FULL_CHECK_BYTES:
        ranges = _sample_ranges(size, _head_bytes(path, size), SAMPLE_BLOCK_BYTES, SAMPLE_BLOCKS)
        record["sample"] = {
            "block_bytes": SAMPLE_BLOCK_BYTES,
            "blocks": SAMPLE_BLOCKS,
            "sha256": _sha256(path, ranges),
        }
    return record


def verify_file(path: str | os.PathLike[str], record: Any, *, full: bool = False) -> None:
    """Compare ``path`` with its ``meta.json`` record; raise :class:`StoreCorruption` naming it.

    The size always; then every byte when ``full`` or when no sample was recorded (small files),
    else the recorded sample.
    """
    path = Path(path)
    redo = "re-extract the store (delete its folder and run the workflow again)"
    try:
        size = int(record["bytes"])
        expected = str(record["sha256"])
        sample = record.get("sample")
        if sample is not None:
            block, blocks = int(sample["block_bytes"]), int(sample["blocks"])
            sampled = str(sample["sha256"])
    except (KeyError, TypeError, ValueError, AttributeError):
        raise StoreCorruption(f"{path}: its checksum record in meta.json is malformed") from None
    found = path.stat().st_size
    if found != size:
        raise StoreCorruption(
            f"{path}: {found} bytes, but meta.json recorded {size} when the store was written "
            f"(truncated or replaced); {redo}"
        )
    if full or sample is None:
        if _sha256(path) != expected:
            raise StoreCorruption(
                f"{path}: sha256 differs from meta.json's (the file changed after it was "
                f"written: corrupted or edited); {redo}"
            )
        return
    ranges = _sample_ranges(size, _head_bytes(path, size), block, blocks)
    if _sha256(path, ranges) != sampled:
        raise StoreCorruption(
            f"{path}: sha256 of its sampled blocks differs from meta.json's (the file changed "
            f"after it was written: corrupted or edited); {redo}"
        )
