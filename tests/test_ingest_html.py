"""HTML guideline pages: main content through trafilatura, sectioned as Markdown; tables keep their rows whole.

The fixture (tests/fixtures/html/hypertension_div_only.html) is a page written for this test in the way many
guideline sites are built: only divs (no nav/header/footer/main tags), a cookie banner, a menu, breadcrumbs, a
"related guidance" sidebar, a "you might also be interested in" block, a footer, a targets table and a dosing table."""

from __future__ import annotations

from pathlib import Path

import pytest

from medkb.errors import BadRecord
from medkb.ingest.chunker import Budget, chunk_sections
from medkb.ingest.documents import parse_html
from medkb.ingest.pipeline import ingest_documents
from medkb.kb.filters import SearchFilters
from tests.test_chunk import minilm_count
from tests.test_ingest_docs import visible_chunks

PAGE = Path(__file__).parent / "fixtures" / "html" / "hypertension_div_only.html"
BOILERPLATE = ("cookies", "Accept all", "Standards and indicators", "Search the website", "News and events",
               "Cardiovascular conditions", "Related guidance", "Chronic kidney disease", "newsletter", "interested in",
               "heart failure published", "Accessibility", "Privacy", "Copyright", "Registered office",
               "social media", "dataLayer", "analytics")
DOSING_ROWS = (
    "| Ramipril | ACE inhibitor | 1.25 mg to 2.5 mg once daily | 10 mg daily |",
    "| Lisinopril | ACE inhibitor | 10 mg once daily | 80 mg daily |",
    "| Losartan | ARB | 50 mg once daily | 100 mg daily |",
    "| Amlodipine | Calcium-channel blocker | 5 mg once daily | 10 mg daily |",
    "| Indapamide | Thiazide-like diuretic | 2.5 mg once daily (modified release 1.5 mg) | 2.5 mg daily |",
)
TARGET_ROW = "| 80 years and over | below 150/90 mmHg | below 145/85 mmHg |"
ALL_ROWS = (*DOSING_ROWS, TARGET_ROW, "| Drug | Class | Usual starting dose | Maximum dose |",
            "| Age group | Clinic blood pressure target | Home or ambulatory target |",
            "| Adults aged under 80 years | below 140/90 mmHg | below 135/85 mmHg |")


def test_div_only_page_keeps_the_guideline_and_drops_the_site(sqlite_store, embedder) -> None:  # type: ignore[no-untyped-def]
    report = ingest_documents(sqlite_store, embedder, [PAGE], source="web-guidelines", doc_type="guideline")
    assert report.added == 1 and report.failed == []
    chunks = visible_chunks(sqlite_store, SearchFilters())
    every = "\n".join(c.text for c in chunks)
    for junk in BOILERPLATE:
        assert junk not in every, junk
    assert chunks[0].title == "Hypertension in adults: diagnosis and management"
    by_section = {c.section for c in chunks}
    assert {"1.1 Measuring blood pressure", "1.3 Treatment targets", "1.5 Usual starting doses"} <= by_section
    # The age group and its target are one row of one chunk, not one paragraph per cell.
    assert any(TARGET_ROW in c.text and c.section == "1.3 Treatment targets" for c in chunks)
    for row in DOSING_ROWS:
        assert any(row in c.text for c in chunks), row


@pytest.mark.parametrize("budget", [40, 64, 100])  # the longest row is 38 MiniLM tokens
def test_table_rows_stay_whole_under_any_budget(budget: int) -> None:
    doc = parse_html(PAGE, "page")
    assert max(minilm_count(r) for r in ALL_ROWS) <= 40
    pieces = chunk_sections(doc.sections, Budget(budget, minilm_count, overlap=8))
    assert len(pieces) > len(doc.sections)  # the budget really forces cuts
    text = doc.text
    for p in pieces:
        assert text[p.start : p.end] == p.text
        for line in p.text.splitlines():
            if "|" in line:  # a piece holds whole rows of a table, never part of one
                assert line in ALL_ROWS, line
    rows_seen = {line for p in pieces for line in p.text.splitlines() if "|" in line}
    assert rows_seen == set(ALL_ROWS)


def test_a_page_of_only_navigation_is_a_bad_record(tmp_path: Path) -> None:
    f = tmp_path / "nav.html"
    f.write_text("<html><body><script>var a=1;</script></body></html>", encoding="utf-8")
    with pytest.raises(BadRecord, match="nav.html: no main text"):
        parse_html(f, "nav")
