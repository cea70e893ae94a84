"""Single-file document parsers: Markdown, plain text, HTML (boilerplate stripped) and PDF (pages kept)."""

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


def parse_markdown(path: Path, external_id: str) -> ParsedDoc:
    """Headings become sections; the first level-1 heading (or the file name) is the title."""
    text = read_text(path)
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
        else:
            buf.append(line)
    parts.append((heading, "\n".join(buf), None))
    sections = build_sections(parts)
    if not sections:
        raise BadRecord(str(path), "no text under any heading")
    return ParsedDoc(external_id, title or path.stem, sections, where=str(path))


def parse_text(path: Path, external_id: str) -> ParsedDoc:
    text = read_text(path)
    sections = build_sections([(None, text, None)])
    return ParsedDoc(external_id, path.stem, sections, where=str(path))


_BOILERPLATE = ("script", "style", "nav", "header", "footer", "aside", "noscript", "form", "iframe", "svg",
                "template", "button")
_BLOCKS = ("p", "div", "li", "tr", "td", "th", "pre", "blockquote", "dd", "dt", "figcaption", "br", "table",
           "ul", "ol", "section", "article", "main", "caption")
_HEADINGS = ("h1", "h2", "h3", "h4")
_MARK = "\x00H\x00"


def parse_html(path: Path, external_id: str) -> ParsedDoc:
    """Main text only (navigation, scripts, headers, footers dropped); h1–h4 headings become sections."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(read_text(path), "html.parser")
    title_tag = soup.find("title")
    title = title_tag.get_text(" ", strip=True) if title_tag else ""
    for tag in soup.find_all(_BOILERPLATE):
        tag.decompose()
    for tag in soup.find_all(attrs={"role": ("navigation", "banner", "contentinfo")}):
        tag.decompose()
    root = soup.find("main") or soup.find("article") or soup.body or soup
    first_h1 = root.find("h1")
    if not title and first_h1:
        title = first_h1.get_text(" ", strip=True)
    for h in root.find_all(_HEADINGS):
        h.replace_with(f"\n{_MARK}{h.get_text(' ', strip=True)}\n")
    for tag in root.find_all(_BLOCKS):
        tag.insert_before("\n")
        tag.insert_after("\n")
    raw = root.get_text("")
    parts: list[tuple[str | None, str, int | None]] = []
    heading: str | None = None
    paras: list[str] = []
    for line in raw.split("\n"):
        if line.startswith(_MARK):
            parts.append((heading, "\n\n".join(paras), None))
            heading, paras = line[len(_MARK):].strip() or None, []
            continue
        line = " ".join(line.split())
        if line:
            paras.append(line)
    parts.append((heading, "\n\n".join(paras), None))
    sections = build_sections(parts)
    if not sections:
        raise BadRecord(str(path), "no visible text after removing navigation and scripts")
    return ParsedDoc(external_id, title or path.stem, sections, where=str(path))


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
