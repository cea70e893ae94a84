"""Single-file document parsers: Markdown, plain text, HTML (main content via trafilatura) and PDF (pages kept)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medkb.errors import BadRecord
from medkb.ingest.chunker import Section


@dataclass
class ParsedDoc:
    """What a parser found: an id unique within its source, a title, sections and metadata."""

    external_id: str
    title: str
    sections: list[Section]
    metadata: dict[str, Any] = field(default_factory=dict)
    language: str | None = None  # set when the input says so; otherwise detected
    where: str = ""  # path[:line] for error messages

    @property
    def text(self) -> str:
        return "".join(s.text for s in self.sections)


def build_sections(parts: list[tuple[str | None, str, int | None]]) -> list[Section]:
    """Sections laid end to end (blank line between) so chunk spans index one document text."""
    out: list[Section] = []
    offset = 0
    for title, text, page in parts:
        text = text.strip()
        if not text:
            continue
        body = text + "\n\n"
        out.append(Section(text=body, title=(title or None) and title[:255], page=page, offset=offset))
        offset += len(body)
    return out


def read_text(path: Path) -> str:
    """The file decoded as UTF-8 (BOM allowed); empty or undecodable files are a BadRecord."""
    data = path.read_bytes()
    if not data.strip():
        raise BadRecord(str(path), "empty file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise BadRecord(str(path), f"not UTF-8 text (byte {exc.start}); convert it to UTF-8", line=line) from None


_MD_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_MD_FENCE = re.compile(r"^\s*(```|~~~)")


_MD_TABLE_RULE = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$")


def markdown_sections(text: str) -> tuple[str | None, list[Section]]:
    """Headings become sections; the first level-1 heading is the title. Table rules (|---|) are dropped:
    each table row stays one line, which the chunker keeps whole."""
    parts: list[tuple[str | None, str, int | None]] = []
    title: str | None = None
    heading: str | None = None
    buf: list[str] = []
    in_fence = False
    for line in text.splitlines():
        if _MD_FENCE.match(line):
            in_fence = not in_fence
        m = None if in_fence else _MD_HEADING.match(line)
        if m:
            parts.append((heading, "\n".join(buf), None))
            buf = []
            heading = m.group(2).strip()
            if title is None and len(m.group(1)) == 1:
                title = heading
        elif in_fence or not _MD_TABLE_RULE.match(line):
            buf.append(line.rstrip())
    parts.append((heading, "\n".join(buf), None))
    return title, build_sections(parts)


def parse_markdown(path: Path, external_id: str) -> ParsedDoc:
    """Markdown sections (``markdown_sections``); the title is the first level-1 heading or the file name."""
    title, sections = markdown_sections(read_text(path))
    if not sections:
        raise BadRecord(str(path), "no text under any heading")
    return ParsedDoc(external_id, title or path.stem, sections, where=str(path))


def parse_text(path: Path, external_id: str) -> ParsedDoc:
    text = read_text(path)
    sections = build_sections([(None, text, None)])
    return ParsedDoc(external_id, path.stem, sections, where=str(path))


_EMPHASIS = re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1|(?<![\w*])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![\w*])")
_ESCAPE = re.compile(r"\\([\\`*_{}\[\]()#+\-.!>])")  # not "|": an escaped bar is a cell's own text


def _trafilatura_config() -> Any:
    from trafilatura.settings import use_config

    cfg = use_config()
    # Its defaults treat a main text under 250 characters as a failed extraction and fall back to the
    # whole page (menus included); a short guideline page is still a page.
    for key in ("MIN_EXTRACTED_SIZE", "MIN_OUTPUT_SIZE"):
        cfg.set("DEFAULT", key, "1")
    return cfg


def parse_html(path: Path, external_id: str) -> ParsedDoc:
    """The page's main content as Markdown (trafilatura: banners, menus, breadcrumbs, sidebars and footers
    dropped; headings, lists and table rows kept), then sectioned like any Markdown file."""
    import trafilatura

    html = read_text(path)
    # Formatting on, or headings come out as plain lines; emphasis and escapes are then taken off again.
    markdown = trafilatura.extract(html, output_format="markdown", include_tables=True, include_links=False,
                                   include_images=False, include_comments=False, include_formatting=True,
                                   deduplicate=False, config=_trafilatura_config()) or ""
    markdown = _ESCAPE.sub(r"\1", _EMPHASIS.sub(lambda m: m.group(2) or m.group(3), markdown))
    title, sections = markdown_sections(markdown)
    if not sections:
        raise BadRecord(str(path), "no main text found (only navigation, scripts or boilerplate)")
    meta = trafilatura.extract_metadata(html)
    return ParsedDoc(external_id, title or (meta.title if meta and meta.title else "") or path.stem, sections,
                     where=str(path))


def parse_pdf(path: Path, external_id: str) -> ParsedDoc:
    """The PDF's text layer page by page; each page is a section so chunks keep their page number."""
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    if path.stat().st_size == 0:
        raise BadRecord(str(path), "empty file")
    try:
        reader = PdfReader(str(path))
        if reader.is_encrypted:
            raise BadRecord(str(path), "encrypted PDF; decrypt it first")
        pages = [(i + 1, page.extract_text() or "") for i, page in enumerate(reader.pages)]
        meta_title = (reader.metadata.title if reader.metadata else None) or ""
    except BadRecord:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, OSError) as exc:
        raise BadRecord(str(path), f"unreadable PDF: {exc}") from None
    sections = build_sections([(f"page {n}", _clean_pdf(t), n) for n, t in pages])
    if not sections:
        raise BadRecord(str(path), "PDF has no text layer (scanned? run OCR first)")
    return ParsedDoc(external_id, str(meta_title).strip() or path.stem, sections,
                     metadata={"pages": len(pages)}, where=str(path))


def _clean_pdf(text: str) -> str:
    # Re-join words hyphenated across line ends, and lines that wrap mid-sentence.
    text = re.sub(r"(\w)-\n(\w)", r"\1\2", text)
    text = re.sub(r"(?<![.!?:。！？\n])\n(?!\n)", " ", text)
    return text


FILE_PARSERS = {"md": parse_markdown, "txt": parse_text, "html": parse_html, "pdf": parse_pdf}
