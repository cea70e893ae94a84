"""Housekeeping the package claims: its Apache-2.0 licence text ships, and third-party pickles are hash-checked."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from medkb.errors import BadRecord
from medkb.ingest.ontologies import cmekg, drugs
from medkb.ingest.ontologies.writer import load_checked_pickle, package_dir

ROOT = Path(__file__).resolve().parents[1]


def test_the_declared_licence_text_ships() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0" and project["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text and len(text.splitlines()) > 190  # the whole text


def test_ranx_is_gone() -> None:
    assert "ranx" not in (ROOT / "pyproject.toml").read_text() and "ranx" not in (ROOT / "constraints.txt").read_text()


def test_pickles_load_only_with_their_recorded_hash(tmp_path: Path) -> None:
    real = package_dir("drug_named_entity_recognition", "drugs") / drugs.DICTIONARY
    data = load_checked_pickle(real, drugs.DICTIONARY_SHA256, "drug-named-entity-recognition")
    assert "drug_canonical_to_data" in data
    # One byte changed (a tampered or different release): refused before unpickling, naming the file.
    tampered = tmp_path / drugs.DICTIONARY
    blob = bytearray(real.read_bytes())
    blob[-1] ^= 1
    tampered.write_bytes(bytes(blob))
    with pytest.raises(BadRecord, match=r"drug_ner_dictionary\.pkl\.bz2: SHA-256 .* refusing to unpickle"):
        load_checked_pickle(tampered, drugs.DICTIONARY_SHA256, "drug-named-entity-recognition")
    assert len(cmekg.KG_SHA256) == 64
