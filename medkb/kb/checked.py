"""Checksummed files beside the knowledge base (the lexical index, the ANN index): written atomically, verified on read."""

from __future__ import annotations

import json
import mmap
import os
import struct
import threading
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

MAGIC = b"MEDKBCK1"  # then u64 header length, u32 CRC32 of the header, the JSON header, then aligned sections
ALIGN = 64
_BLOCK = 1 << 24


class CorruptFile(Exception):
    """A file that is truncated, altered, unreadable or not of this format: rebuild what it held, never serve it."""


def crc_file(path: Path) -> int:
    """CRC32 of a whole file, read in 16 MB blocks (zlib's CRC32 runs at ~2.7 GB/s here, SHA-256 at ~1.1)."""
    crc = 0
    with path.open("rb") as f:
        while block := f.read(_BLOCK):
            crc = zlib.crc32(block, crc)
    return crc


def write_atomic(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write through ``write`` to a temp file in the same folder, fsync, then rename over ``path``: a reader
    sees the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_arrays(path: Path, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> None:
    """One file: a header (``meta``, and per array its dtype, shape, offset and CRC32) under its own CRC32,
    then each array's raw bytes at a 64-byte boundary, so a reader can map them without copying."""
    sections, offset, blobs = {}, 0, []
    for name, a in arrays.items():
        a = np.ascontiguousarray(a)
        if a.dtype.hasobject:
            raise TypeError(f"{name}: object arrays cannot be saved")
        data = a.tobytes() if a.size else b""
        sections[name] = {"dtype": a.dtype.str, "shape": list(a.shape), "offset": offset, "nbytes": len(data),
                          "crc": zlib.crc32(data)}
        blobs.append(data)
        offset += -(-len(data) // ALIGN) * ALIGN
    header = json.dumps({"meta": dict(meta), "sections": sections}).encode()
    start = -(-(len(MAGIC) + 12 + len(header)) // ALIGN) * ALIGN

    def write(f: BinaryIO) -> None:
        f.write(MAGIC + struct.pack("<QI", len(header), zlib.crc32(header)) + header)
        f.write(b"\0" * (start - len(MAGIC) - 12 - len(header)))
        for data in blobs:
            f.write(data)
            f.write(b"\0" * (-len(data) % ALIGN))

    write_atomic(path, write)


def load_arrays(path: Path, names: Callable[[str], bool] | None = None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(meta, arrays) of a file written by ``save_arrays``. The arrays are read-only views of a memory map
    (no copy, no second read), and every section's CRC32 is checked before it is returned: a flipped byte,
    a truncation or another format raises CorruptFile. ``names`` limits which sections are mapped."""
    try:
        f = path.open("rb")
    except OSError as exc:
        raise CorruptFile(f"{path}: cannot open ({exc.strerror})") from exc
    with f:
        head = f.read(len(MAGIC) + 12)
        if len(head) < len(MAGIC) + 12 or head[: len(MAGIC)] != MAGIC:
            raise CorruptFile(f"{path}: not a medkb checksummed file")
        n, crc = struct.unpack("<QI", head[len(MAGIC):])
        raw = f.read(n)
        if len(raw) != n or zlib.crc32(raw) != crc:
            raise CorruptFile(f"{path}: header checksum does not match")
        try:
            header = json.loads(raw)
            sections = header["sections"]
        except (ValueError, KeyError, TypeError) as exc:
            raise CorruptFile(f"{path}: unreadable header") from exc
        start = -(-(len(MAGIC) + 12 + n) // ALIGN) * ALIGN
        size = os.fstat(f.fileno()).st_size
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
    buf = memoryview(mm)
    arrays: dict[str, np.ndarray] = {}
    for name, sec in sections.items():
        if names is not None and not names(name):
            continue
        lo, nbytes = start + int(sec["offset"]), int(sec["nbytes"])
        if lo + nbytes > size:
            raise CorruptFile(f"{path}: section {name} runs past the end of the file (truncated?)")
        view = buf[lo : lo + nbytes]
        if zlib.crc32(view) != sec["crc"]:
            raise CorruptFile(f"{path}: section {name} does not match its checksum")
        try:
            arrays[name] = np.frombuffer(view, dtype=np.dtype(sec["dtype"])).reshape(sec["shape"])
        except (TypeError, ValueError) as exc:
            raise CorruptFile(f"{path}: section {name} has a bad shape or type") from exc
    return header["meta"], arrays
