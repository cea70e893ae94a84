"""The checksummed file beside a knowledge base (kb/checked.py): arrays round-trip, any damage is refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medkb.kb.checked import CorruptFile, crc_file, load_arrays, save_arrays


def sample() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    return {"ids": np.arange(1000, dtype=np.int64) * 7, "vecs": rng.standard_normal((50, 8)).astype(np.float32),
            "alive": rng.random(1000) > 0.1, "empty": np.zeros(0, dtype=np.int32)}


def test_arrays_round_trip_mapped_read_only(tmp_path: Path) -> None:
    path = tmp_path / "x.ck"
    save_arrays(path, sample(), {"kind": "test", "seq": 42})
    meta, arrays = load_arrays(path)
    assert meta == {"kind": "test", "seq": 42}
    for k, v in sample().items():
        assert arrays[k].dtype == v.dtype and np.array_equal(arrays[k], v)
    assert not arrays["ids"].flags.writeable  # a view of the file: an index never edits it in place
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("where", ["header", "section", "last byte"])
def test_a_flipped_byte_anywhere_is_refused(tmp_path: Path, where: str) -> None:
    path = tmp_path / "x.ck"
    save_arrays(path, sample(), {"kind": "test"})
    raw = bytearray(path.read_bytes())
    at = {"header": 30, "section": len(raw) // 2, "last byte": len(raw) - 1}[where]
    if where == "last byte":  # padding after the last section is not data: damage the last data byte instead
        meta, arrays = load_arrays(path)
        at = len(raw) - 1 - (-arrays["alive"].nbytes % 64) - (-arrays["empty"].nbytes % 64)
    raw[at] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(CorruptFile):
        load_arrays(path)


def test_truncated_or_foreign_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.ck"
    save_arrays(path, sample(), {"kind": "test"})
    full = path.read_bytes()
    path.write_bytes(full[: len(full) * 2 // 3])
    with pytest.raises(CorruptFile, match="past the end|checksum"):
        load_arrays(path)
    path.write_bytes(b"PK\x03\x04 an npz from elsewhere")
    with pytest.raises(CorruptFile, match="not a medkb"):
        load_arrays(path)
    with pytest.raises(CorruptFile, match="cannot open"):
        load_arrays(tmp_path / "absent.ck")


def test_crc_file_matches_zlib(tmp_path: Path) -> None:
    import zlib

    path = tmp_path / "blob"
    data = np.random.default_rng(1).bytes(3 << 20)
    path.write_bytes(data)
    assert crc_file(path) == zlib.crc32(data)
