"""De-identification primitives: keyed pseudonyms, interval-preserving date shifts, birth year, scrubbing."""

from __future__ import annotations

import datetime as dt

import pytest

from medkb.errors import ConfigError
from medkb.ingest.deid import MAX_SHIFT_DAYS, Deidentifier
from medkb.ingest.phi import scrub


def test_pseudonyms_are_keyed_deterministic_and_tenant_scoped() -> None:
    a, b = Deidentifier("s3cret", "hosp-a"), Deidentifier("s3cret", "hosp-b")
    pid = "b23188ac-9529-2450-e0b7-58adb2b38de6"
    assert a.patient_id(pid) == Deidentifier("s3cret", "hosp-a").patient_id(pid)
    assert a.patient_id(pid) != b.patient_id(pid)
    assert a.patient_id(pid) != Deidentifier("other", "hosp-a").patient_id(pid)
    assert pid not in a.patient_id(pid) and len(a.patient_id(pid)) == 25
    with pytest.raises(ConfigError):
        Deidentifier("", "t")


def test_date_shift_is_per_patient_nonzero_bounded_and_keeps_intervals() -> None:
    d = Deidentifier("s3cret", "hosp-a")
    offsets = {d.date_offset(f"patient-{i}") for i in range(300)}
    assert 0 not in offsets and all(abs(o) <= MAX_SHIFT_DAYS for o in offsets)
    assert len(offsets) > 150 and min(offsets) < 0 < max(offsets)
    start, stop = dt.date(2005, 11, 20), dt.date(2007, 2, 3)
    s1, s2 = d.shift("p", start), d.shift("p", stop)
    assert s1 != start and (s2 - s1) == (stop - start)


def test_birth_year_only_and_very_old_ages_grouped() -> None:
    today = dt.date(2026, 1, 1)
    assert Deidentifier.birth_year(dt.date(1988, 1, 16), today) == 1988
    assert Deidentifier.birth_year(dt.date(1920, 5, 1), today) == 1936


@pytest.mark.parametrize(
    ("text", "leak"),
    [
        ("Call 555-123-4567 after discharge", "555-123-4567"),
        ("phone (617) 555-0101", "555-0101"),
        ("email jane.doe@example.org for results", "jane.doe@example.org"),
        ("SSN 999-56-3509 on file", "999-56-3509"),
        ("seen on 2019-03-04T10:00:00Z", "2019-03-04"),
        ("seen on 03/04/2019", "03/04/2019"),
        ("admitted March 4, 2019", "March 4, 2019"),
        ("MRN: A1234567 noted", "A1234567"),
        ("licence S99970236", "S99970236"),
        ("passport X51573628X", "X51573628X"),
        ("ref b23188ac-9529-2450-e0b7-58adb2b38de6", "b23188ac"),
        ("2019年3月4日入院", "2019年3月4日"),
    ],
)
def test_scrub_removes_identifiers_from_free_text(text: str, leak: str) -> None:
    assert leak not in (scrub(text) or "")


def test_scrub_keeps_clinical_wording() -> None:
    for text in ("Body mass index 30.0-39.9 - obesity (finding)", "Multiple Sclerosis",
                 "Methylprednisolone 4 MG Oral Tablet", "Hemoglobin A1c/Hemoglobin.total in Blood"):
        assert scrub(text) == text
