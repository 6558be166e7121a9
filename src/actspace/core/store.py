"""The activation store: a folder of safetensors, JSONL scores and ``meta.json``, read lazily.

Layout of ``results/activations/{model}/{task}/``:

- ``pooled.safetensors``: one tensor per pooling ("last", "mean"), [items, stored layers, d];
- ``choice_end.safetensors``: "choice_end" [choices, stored layers, d], one row per real choice
  (items in order, each item's choices in order), and "choice_counts" [items] (int32). Stores
  written before choice ends were packed hold "choice_end" [items, max_choices, stored layers, d]
  and "choice_mask" [items, max_choices] (uint8, zero-padded); both layouts read the same;
- ``scores.jsonl``: one row per item, in item order;
- ``meta.json``: model, task, shapes, dtypes, the stored ``layers``, forward passes, timings,
  provenance, the size of every file (``store_bytes``) and the size and sha256 of the three
  other files (written last).

Layer 0 is the embedding output (the input of the first block); layer k is the output of block
k. ``meta.json``'s ``layers`` lists the stored ones (``extract.layers``; absent: all 0..n_layers);
reading another fails naming the layer, the store and the key. Consumers that pick a layer by
depth pick among the stored ones (:func:`nearest_stored_layer`, :func:`stored_layers`). Reads are
memory-mapped: ``store.layer(6)`` touches only layer 6 of every item.

Opening a store checks it (:class:`ActivationStore`): complete safetensors files whose shapes
agree with ``meta.json``, the files' sha256 against ``meta.json`` (:mod:`actspace.core.checksums`:
a fast check by default, a full one on request; stores written before checksums were recorded
open unchecked) and every score row. Every failure is one line naming the file.

The writer side is :func:`concat_safetensors`, which joins shard files along the item axis by
copying bytes, so a store larger than memory can be assembled.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from safetensors import safe_open

from actspace.core.checksums import StoreCorruption as StoreCorruption  # re-exported
from actspace.core.checksums import check_mode, verify_file
from actspace.core.io import atomic_path, read_json

#: The files of a finished store; ``meta.json`` is written last and marks completion.
STORE_FILES = ("pooled.safetensors", "choice_end.safetensors", "scores.jsonl", "meta.json")
#: The files whose size and sha256 ``meta.json`` records (under ``checksums``).
CHECKED_FILES = STORE_FILES[:3]
#: The tensor of a packed ``choice_end.safetensors``: the number of real choices of each item.
CHOICE_COUNTS = "choice_counts"
#: The keys every row of ``scores.jsonl`` must have.
SCORE_KEYS = ("id", "label", "logliks", "correct")

#: safetensors dtype codes and their sizes in bits (the sub-byte ones are packed).
_DTYPE_BITS = {
    "F64": 64,
    "F32": 32,
    "F16": 16,
    "BF16": 16,
    "I64": 64,
    "I32": 32,
    "I16": 16,
    "I8": 8,
    "U64": 64,
    "U32": 32,
    "U16": 16,
    "U8": 8,
    "BOOL": 8,
    "C64": 64,
    "F8_E4M3": 8,
    "F8_E5M2": 8,
    "F8_E8M0": 8,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
    "F4": 4,
}
_MAX_HEADER = 100_000_000
_COPY_CHUNK = 64 * 1024 * 1024


def read_header(path: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """Parse and check the header of a safetensors file without reading its data.

    Returns ``{name: {"dtype", "shape", "data_offsets"}}`` (plus ``"__metadata__"`` when present).
    Raises ValueError naming the file when it is missing, truncated or not a safetensors file: the
    declared data size must match the file size exactly, so a partly written file is caught here.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: file not found")
    size = path.stat().st_size
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise ValueError(f"{path}: truncated or not a safetensors file ({size} bytes)")
        (header_len,) = struct.unpack("<Q", prefix)
        if header_len > min(_MAX_HEADER, size - 8):
            raise ValueError(f"{path}: truncated or not a safetensors file (bad header length)")
        raw = handle.read(header_len)
    try:
        header = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ValueError(f"{path}: corrupted safetensors header (not valid JSON)") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: corrupted safetensors header")
    end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            begin, stop = info["data_offsets"]
            bits = int(np.prod(info["shape"], dtype=np.int64)) * _DTYPE_BITS[info["dtype"]]
            expected = -(-bits // 8)
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{path}: corrupted safetensors header entry {name!r}") from None
        if stop - begin != expected:
            raise ValueError(f"{path}: tensor {name!r} has an inconsistent size in the header")
        end = max(end, stop)
    if size != 8 + header_len + end:
        raise ValueError(
            f"{path}: truncated or corrupted safetensors file "
            f"(header declares {8 + header_len + end} bytes, file has {size})"
        )
    return header


def concat_safetensors(
    path: str | os.PathLike[str],
    parts: Sequence[str | os.PathLike[str]],
    names: Sequence[str],
    metadata: dict[str, str] | None = None,
) -> None:
    """Write ``path`` holding each tensor of ``names`` concatenated along axis 0 over ``parts``.

    The result is a plain safetensors file (readable by ``safe_open``), written atomically. Bytes
    are copied part by part, so memory stays at one chunk whatever the store size. All parts must
    hold every name with the same dtype and trailing shape.
    """
    if not parts:
        raise ValueError("concat_safetensors needs at least one part")
    headers = [read_header(part) for part in parts]
    entries: dict[str, dict[str, Any]] = {}
    offset = 0
    for name in names:
        infos = []
        for part, header in zip(parts, headers, strict=True):
            if name not in header:
                raise ValueError(f"{part}: tensor {name!r} missing")
            infos.append(header[name])
        dtype, tail = infos[0]["dtype"], infos[0]["shape"][1:]
        for part, info in zip(parts, infos, strict=True):
            if info["dtype"] != dtype or info["shape"][1:] != tail:
                raise ValueError(f"{part}: tensor {name!r} does not match the other parts")
        rows = sum(info["shape"][0] for info in infos)
        nbytes = sum(info["data_offsets"][1] - info["data_offsets"][0] for info in infos)
        entries[name] = {
            "dtype": dtype,
            "shape": [rows, *tail],
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
    header_obj: dict[str, Any] = {}
    if metadata:
        header_obj["__metadata__"] = dict(metadata)
    header_obj.update(entries)
    raw = json.dumps(header_obj, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    with atomic_path(path) as tmp, open(tmp, "wb") as out:
        out.write(struct.pack("<Q", len(raw)))
        out.write(raw)
        for name in names:
            for part in parts:
                _copy_tensor_bytes(Path(part), name, out)
        out.flush()
        os.fsync(out.fileno())


def _copy_tensor_bytes(part: Path, name: str, out: Any) -> None:
    """Append the raw bytes of tensor ``name`` of safetensors file ``part`` to ``out``."""
    header = read_header(part)
    begin, stop = header[name]["data_offsets"]
    with open(part, "rb") as handle:
        (header_len,) = struct.unpack("<Q", handle.read(8))
        handle.seek(8 + header_len + begin)
        remaining = stop - begin
        while remaining:
            chunk = handle.read(min(_COPY_CHUNK, remaining))
            if not chunk:
                raise ValueError(f"{part}: truncated while reading tensor {name!r}")
            out.write(chunk)
            remaining -= len(chunk)


def _is_number(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, int) and not isinstance(value, bool)


def _score_row_problem(row: dict[str, Any], item: int, n_choices: int) -> str | None:
    """What is wrong with the score row of item ``item`` (``n_choices`` real choices), if any."""
    missing = [key for key in SCORE_KEYS if key not in row]
    if missing:
        return f"missing key {missing[0]!r} (every row needs {', '.join(SCORE_KEYS)})"
    if "index" in row and row["index"] != item:
        return f"index {row['index']!r}, but it is row {item} (rows are in item order)"
    logliks = row["logliks"]
    if not isinstance(logliks, list) or not all(_is_number(value) for value in logliks):
        return "'logliks' must be a list of finite numbers"
    if len(logliks) != n_choices:
        return f"{len(logliks)} log-likelihoods for {n_choices} choices (one per choice)"
    label = row["label"]
    if not isinstance(label, int) or isinstance(label, bool) or not 0 <= label < n_choices:
        return f"label {label!r} is not a choice index (an integer from 0 to {n_choices - 1})"
    if not isinstance(row["correct"], bool):
        return f"'correct' is {row['correct']!r}, not true or false"
    return None


def read_scores(path: str | os.PathLike[str], n_choices: Sequence[int]) -> list[dict[str, Any]]:
    """The rows of a store's ``scores.jsonl``, one per item (``n_choices[i]`` choices each),
    each checked: valid UTF-8 JSON objects with ``id``, ``label`` (a choice index), ``logliks``
    (one finite number per choice), ``correct`` (a boolean) and, if present, ``index`` equal to
    the row's item. Any problem is one line naming the file and the line."""
    path = Path(path)
    rows: list[dict[str, Any]] = []
    problem = None
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                problem = f"line {number}: not valid UTF-8 (byte {error.start + 1} of the line)"
                break
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                problem = f"line {number}: not valid JSON ({error.msg})"
                break
            if not isinstance(row, dict):
                problem = f"line {number}: not a JSON object"
                break
            if len(rows) < len(n_choices):
                found = _score_row_problem(row, len(rows), int(n_choices[len(rows)]))
                if found is not None:
                    problem = f"line {number}: {found}"
                    break
            rows.append(row)
    if problem is not None:
        raise StoreCorruption(f"{path}: {problem}; re-extract the store")
    if len(rows) != len(n_choices):
        raise StoreCorruption(
            f"{path}: {len(rows)} rows, but meta.json says n_items={len(n_choices)}"
        )
    return rows


def _to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """float32 (or bool for masks) numpy copy of a tensor of any stored dtype."""
    if tensor.dtype in (torch.uint8, torch.bool):
        return tensor.numpy().astype(bool)
    return tensor.to(torch.float32).numpy()


def stored_layers(store: Any) -> list[int]:
    """The layers ``store`` holds, ascending (every layer 0..n_layers unless it says otherwise)."""
    layers = getattr(store, "layers", None)
    if layers is None:
        return list(range(int(store.n_layers) + 1))
    return [int(k) for k in layers]


def nearest_layer(layers: Sequence[int], k: int) -> int:
    """The layer of ``layers`` nearest to layer ``k`` (the lower one on a tie)."""
    return min(layers, key=lambda layer: (abs(layer - int(k)), layer))


def nearest_stored_layer(store: Any, k: int, *, minimum: int = 0) -> int:
    """The stored layer nearest to layer ``k`` among those from ``minimum`` on; ``k`` itself
    when it is stored, so a store with every layer gives back what was asked for."""
    layers = [layer for layer in stored_layers(store) if layer >= minimum]
    if not layers:
        raise ValueError(
            f"{getattr(store, 'path', 'the store')}: no stored layer from {minimum} on "
            f"(stored: {stored_layers(store)}); add one to extract.layers"
        )
    return nearest_layer(layers, k)


def _check_layer_list(file: Path, layers: Any, n_layers: int) -> list[int]:
    """meta.json's ``layers``: distinct ascending integers within 0..n_layers."""
    if layers is None:
        return list(range(n_layers + 1))
    if (
        not isinstance(layers, list)
        or not layers
        or not all(isinstance(k, int) and not isinstance(k, bool) for k in layers)
        or layers != sorted(set(layers))
        or not 0 <= layers[0] <= layers[-1] <= n_layers
    ):
        raise ValueError(
            f"{file}: 'layers' must list distinct ascending layers within 0..{n_layers}"
        )
    return list(layers)


class StoreLike(Protocol):
    """What the experiments read of an activation store: :class:`ActivationStore` and the
    synthetic stores of the tests both provide it."""

    meta: dict
    n_items: int
    n_layers: int
    hidden_size: int

    def layer(self, k: int, pooling: str = "last") -> np.ndarray: ...

    def choice_end(self, k: int) -> tuple[np.ndarray, np.ndarray]: ...

    def correct(self) -> np.ndarray: ...

    def logliks(self) -> list[np.ndarray]: ...

    def scores(self) -> list[dict]: ...


class ActivationStore:
    """Read access to one activation store folder.

    Construction checks that every file is present, that the safetensors files are complete and
    agree with ``meta.json`` on the shapes, that the files match the sha256 recorded in
    ``meta.json`` (``check``: ``fast`` or ``full``, default ``$ACTSPACE_STORE_CHECK`` else
    ``fast``; see :mod:`actspace.core.checksums`) and that every score row is well formed; it
    reads no activation data beyond the fast check's sample. Each read checks its values are
    finite and names the file and tensor if not.

    A store whose ``meta.json`` has no ``checksums`` (written before they were recorded) opens
    with every other check and ``integrity`` saying it was not checksummed: its results stay
    usable, and re-extracting it adds the checksums.
    """

    #: Which layers the store holds (meta.json ``layers``), ascending.
    layers: list[int]

    def __init__(self, path: str | os.PathLike[str], *, check: str | None = None) -> None:
        self.path = Path(path)
        mode = check_mode(check)
        if not self.path.is_dir():
            raise ValueError(f"{self.path}: activation store folder not found")
        for name in STORE_FILES:
            if not (self.path / name).is_file():
                raise ValueError(
                    f"{self.path / name}: missing from the activation store "
                    "(extraction unfinished?)"
                )
        try:
            self.meta: dict[str, Any] = read_json(self.path / "meta.json")
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ValueError(f"{self.path / 'meta.json'}: not valid JSON") from None
        if not isinstance(self.meta, dict):
            raise ValueError(f"{self.path / 'meta.json'}: not a JSON object")
        try:
            self.n_items = int(self.meta["n_items"])
            self.n_layers = int(self.meta["n_layers"])
            self.hidden_size = int(self.meta["hidden_size"])
            self.poolings: list[str] = list(self.meta["poolings"])
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{self.path / 'meta.json'}: missing or bad field {error}") from None
        self.layers = _check_layer_list(
            self.path / "meta.json", self.meta.get("layers"), self.n_layers
        )
        self._pooled_file = self.path / "pooled.safetensors"
        self._choice_file = self.path / "choice_end.safetensors"
        pooled = read_header(self._pooled_file)
        depth, d = len(self.layers), self.hidden_size
        for pooling in self.poolings:
            self._check_shape(self._pooled_file, pooled, pooling, [self.n_items, depth, d])
        self._check_choice_header(read_header(self._choice_file), depth, d)
        self.integrity = self._verify_checksums(mode)
        n_choices = self.choice_mask().sum(axis=1).tolist()
        self._scores = read_scores(self.path / "scores.jsonl", n_choices)

    def _check_choice_header(self, choice: dict[str, Any], depth: int, d: int) -> None:
        """Check the choice-end tensors' shapes; sets the layout and ``max_choices``."""
        file = self._choice_file
        self._packed = CHOICE_COUNTS in choice
        if self._packed:
            self._check_shape(file, choice, CHOICE_COUNTS, [self.n_items])
            with safe_open(file, framework="pt") as handle:
                self._counts = handle.get_tensor(CHOICE_COUNTS).to(torch.int64).numpy()
            if (self._counts < 0).any():
                raise ValueError(f"{file}: tensor {CHOICE_COUNTS!r} has negative counts")
            self.max_choices = int(self._counts.max(initial=0))
            total = int(self._counts.sum())
            self._check_shape(file, choice, "choice_end", [total, depth, d])
            return
        if "choice_end" not in choice or "choice_mask" not in choice:
            raise ValueError(
                f"{file}: needs tensors 'choice_end' and {CHOICE_COUNTS!r} (or, in the padded "
                "layout, 'choice_mask')"
            )
        self.max_choices = int(choice["choice_mask"]["shape"][1])
        self._check_shape(file, choice, "choice_mask", [self.n_items, self.max_choices])
        self._check_shape(file, choice, "choice_end", [self.n_items, self.max_choices, depth, d])

    def _verify_checksums(self, mode: str) -> str:
        """Check every file against ``meta.json``'s ``checksums``; returns what was checked."""
        records = self.meta.get("checksums")
        if records is None:
            return "unchecked: meta.json has no checksums (written before they were recorded)"
        if not isinstance(records, dict):
            raise StoreCorruption(f"{self.path / 'meta.json'}: 'checksums' must be an object")
        for name in CHECKED_FILES:
            if name not in records:
                raise StoreCorruption(f"{self.path / 'meta.json'}: no checksum for {name}")
            verify_file(self.path / name, records[name], full=mode == "full")
        return mode

    @staticmethod
    def _check_shape(file: Path, header: dict[str, Any], name: str, shape: list[int]) -> None:
        if name not in header:
            raise ValueError(f"{file}: tensor {name!r} missing")
        found = list(header[name]["shape"])
        if found != shape:
            raise ValueError(
                f"{file}: tensor {name!r} has shape {found}, meta.json implies {shape}"
            )

    def __repr__(self) -> str:
        return (
            f"ActivationStore({str(self.path)!r}, n_items={self.n_items}, "
            f"n_layers={self.n_layers}, hidden_size={self.hidden_size}, poolings={self.poolings})"
        )

    # -- scores --------------------------------------------------------------------------------
    def scores(self) -> list[dict[str, Any]]:
        """The per-item score rows, in item order."""
        return self._scores

    def correct(self) -> np.ndarray:
        """Whether the model's prediction (highest log-likelihood) is right, bool [items]."""
        return np.array([bool(row["correct"]) for row in self._scores], dtype=bool)

    def logliks(self) -> list[np.ndarray]:
        """Per item, the log-likelihood of every choice (items may differ in choice count)."""
        return [np.asarray(row["logliks"], dtype=np.float64) for row in self._scores]

    def labels(self) -> np.ndarray:
        """The index of the right choice per item, int [items]."""
        return np.array([int(row["label"]) for row in self._scores], dtype=np.int64)

    def ids(self) -> list[str]:
        """The item ids, in item order."""
        return [str(row["id"]) for row in self._scores]

    # -- activations ---------------------------------------------------------------------------
    def _check_layer(self, k: int) -> int:
        """The position of layer ``k`` in the stored tensors (negative ``k`` counts from the
        last block); one line naming the layer, the store and ``extract.layers`` if not stored."""
        if not isinstance(k, int | np.integer) or not -(self.n_layers + 1) <= k <= self.n_layers:
            raise ValueError(f"layer {k!r} out of range 0..{self.n_layers} (0 = embeddings)")
        layer = int(k) % (self.n_layers + 1)
        if layer not in self.layers:
            raise ValueError(
                f"{self.path}: layer {layer} was not stored (stored: {_ranges(self.layers)}); "
                "add it to extract.layers and extract again"
            )
        return self.layers.index(layer)

    def _check_pooling(self, pooling: str) -> None:
        if pooling not in self.poolings:
            raise ValueError(f"pooling {pooling!r} not in this store; available: {self.poolings}")

    def _finite(self, array: np.ndarray, file: Path, name: str, where: str) -> np.ndarray:
        if array.dtype != bool and not np.isfinite(array).all():
            raise ValueError(f"{file}: tensor {name!r} has NaN or infinite values ({where})")
        return array

    def layer(self, k: int, pooling: str = "last") -> np.ndarray:
        """Pooled activations of layer ``k`` for every item, float32 [items, d] (one layer read)."""
        at = self._check_layer(k)
        self._check_pooling(pooling)
        with safe_open(self._pooled_file, framework="pt") as handle:
            data = handle.get_slice(pooling)[:, at : at + 1, :]
        where = f"layer {self.layers[at]}"
        return self._finite(_to_numpy(data[:, 0]), self._pooled_file, pooling, where)

    def pooled(self, pooling: str = "last") -> np.ndarray:
        """The stored layers of one pooling, float32 [items, len(layers), d] (every layer 0..
        n_layers unless ``extract.layers`` chose fewer; ``self.layers`` says which)."""
        self._check_pooling(pooling)
        with safe_open(self._pooled_file, framework="pt") as handle:
            data = handle.get_tensor(pooling)
        return self._finite(_to_numpy(data), self._pooled_file, pooling, "all layers")

    def choice_mask(self) -> np.ndarray:
        """Which choice slots are real, bool [items, max_choices]."""
        if self._packed:
            return np.arange(self.max_choices)[None, :] < self._counts[:, None]
        with safe_open(self._choice_file, framework="pt") as handle:
            return _to_numpy(handle.get_tensor("choice_mask"))

    def choice_end(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Residual stream at each choice's last token at layer ``k``.

        Returns ``(activations [items, max_choices, d] float32, mask [items, max_choices] bool)``;
        padded slots (items with fewer choices) are zero and masked out. A packed store's rows are
        spread into this layout, so both layouts give the same arrays.
        """
        at = self._check_layer(k)
        where = f"layer {self.layers[at]}"
        mask = self.choice_mask()
        with safe_open(self._choice_file, framework="pt") as handle:
            if not self._packed:
                data = _to_numpy(handle.get_slice("choice_end")[:, :, at : at + 1, :][:, :, 0])
                return self._finite(data, self._choice_file, "choice_end", where), mask
            rows = _to_numpy(handle.get_slice("choice_end")[:, at : at + 1, :][:, 0])
        rows = self._finite(rows, self._choice_file, "choice_end", where)
        array = np.zeros((self.n_items, self.max_choices, self.hidden_size), dtype=rows.dtype)
        array[mask] = rows  # boolean indexing is row-major: items in order, then their choices
        return array, mask

    def verify(self) -> None:
        """Read every tensor once and raise ValueError on any NaN or infinite value."""
        for file in (self._pooled_file, self._choice_file):
            with safe_open(file, framework="pt") as handle:
                for name in handle.keys():  # noqa: SIM118 (safe_open handles are not mappings)
                    tensor = handle.get_tensor(name)
                    if tensor.is_floating_point() and not torch.isfinite(tensor).all():
                        raise ValueError(f"{file}: tensor {name!r} has NaN or infinite values")


def _ranges(layers: Sequence[int]) -> str:
    """``[0, 1, 2, 5]`` as ``0-2, 5``: short enough for a one-line error."""
    parts: list[str] = []
    start = prev = layers[0]
    for k in [*layers[1:], None]:
        if k is not None and k == prev + 1:
            prev = k
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if k is not None:
            start = prev = k
    return ", ".join(parts)


@dataclass(frozen=True)
class NamedStore:
    """An activation store with the names of its model and task."""

    model: str
    task: str
    store: StoreLike


def open_stores(folders: str | Sequence[str]) -> list[NamedStore]:
    """Open activation stores (comma-separated folders, or a list), in the given order.

    Each is named by the workflow's layout ``results/activations/{model}/{task}``: the model is
    the folder's parent's name, the task the folder's own name.
    """
    parts = folders.split(",") if isinstance(folders, str) else list(folders)
    paths = [Path(part.strip()) for part in parts if part.strip()]
    if not paths:
        raise ValueError("no activation stores given")
    return [
        NamedStore(model=path.parent.name, task=path.name, store=ActivationStore(path))
        for path in paths
    ]


def open_named_stores(stores: str, model_names: str | None = None) -> dict[str, StoreLike]:
    """Stores by model name from comma-separated ``--stores`` (and optional ``--model-names``;
    default: each store's meta.json model, else its parent folder's name), in the given order."""
    opened = open_stores(stores)
    if model_names:
        names = [part for part in model_names.split(",") if part]
        if len(names) != len(opened):
            raise ValueError(f"--model-names has {len(names)} names for {len(opened)} stores")
    else:
        names = [str(named.store.meta.get("model") or named.model) for named in opened]
    if len(set(names)) != len(names):
        raise ValueError(f"model names must be distinct, got {names}")
    return {name: named.store for name, named in zip(names, opened, strict=True)}
