"""Many-document inputs (JSONL, BEIR corpus.jsonl, PubMedQA ori_pqal.json) and format detection."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from medkb.errors import BadRecord
from medkb.ingest.documents import FILE_PARSERS, ParsedDoc, build_sections, read_text

FORMATS = ("auto", "md", "txt", "html", "pdf", "jsonl", "beir", "pubmedqa")
_EXT = {".md": "md", ".markdown": "md", ".txt": "txt", ".text": "txt", ".html": "html", ".htm": "html",
        ".pdf": "pdf", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "pubmedqa"}

Item = ParsedDoc | BadRecord


def detect_format(path: Path) -> str | None:
    """The format of one file from its name and, for JSON, its first bytes; None if unknown."""
    if path.name == "corpus.jsonl":
        return "beir"
    fmt = _EXT.get(path.suffix.lower())
    if fmt == "jsonl":
        first = _first_line(path)
        if first.startswith("{") and '"_id"' in first:
            return "beir"
    return fmt


def _first_line(path: Path) -> str:
    try:
        with path.open("rb") as f:
            return f.readline(65536).decode("utf-8", "replace").strip()
    except OSError:
        return ""


def expand(paths: list[Path], fmt: str) -> list[tuple[Path, str, Path]]:
    """(file, format, root) for each input; folders are walked, a folder with corpus.jsonl is BEIR."""
    out: list[tuple[Path, str, Path]] = []
    for p in paths:
        if not p.exists():
            raise BadRecord(str(p), "no such file or folder")
        if p.is_dir():
            if (p / "corpus.jsonl").is_file() and fmt in ("auto", "beir"):
                out.append((p / "corpus.jsonl", "beir", p))
                continue
            for f in sorted(x for x in p.rglob("*") if x.is_file()):
                if any(part.startswith(".") for part in f.relative_to(p).parts):
                    continue
                found = detect_format(f)
                if found is None:
                    continue
                if fmt == "auto" or found == fmt or (fmt == "jsonl" and found == "beir"):
                    out.append((f, fmt if fmt != "auto" else found, p))
        else:
            found = fmt if fmt != "auto" else detect_format(p)
            if found is None:
                raise BadRecord(str(p), f"cannot tell the format from {p.suffix or 'no extension'!r}; "
                                "pass --format")
            out.append((p, found, p.parent))
    return out


def iter_items(paths: list[Path], fmt: str = "auto") -> Iterator[Item]:
    """Every document of every input, or a BadRecord for what cannot be read (and reading goes on)."""
    files: list[tuple[Path, str, Path]] = []
    for p in paths:
        try:
            files.extend(expand([p], fmt))
        except BadRecord as exc:
            yield exc
    for path, f, root in files:
        ext_id = path.relative_to(root).as_posix()
        try:
            if f in FILE_PARSERS:
                yield FILE_PARSERS[f](path, ext_id)
            elif f in ("jsonl", "beir"):
                yield from iter_jsonl(path, beir=(f == "beir"))
            elif f == "pubmedqa":
                yield from iter_pubmedqa(path)
            else:
                yield BadRecord(str(path), f"unknown format {f!r}; choose one of {', '.join(FORMATS)}")
        except BadRecord as exc:
            yield exc
        except OSError as exc:
            yield BadRecord(str(path), f"cannot read: {exc.strerror or exc}")


_JSONL_KNOWN = {"id", "_id", "title", "text", "metadata", "language", "lang"}


def iter_jsonl(path: Path, beir: bool = False) -> Iterator[Item]:
    """One document per line: ``id`` (``_id`` for BEIR), ``title``, ``text``; other keys are metadata."""
    id_key = "_id" if beir else "id"
    any_line = False
    with path.open("rb") as fh:
        for n, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            any_line = True
            where = f"{path}:{n}"
            try:
                rec = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                yield BadRecord(str(path), "not UTF-8 text", line=n)
                continue
            except json.JSONDecodeError as exc:
                yield BadRecord(str(path), f"invalid JSON: {exc.msg} (column {exc.colno})", line=n)
                continue
            if not isinstance(rec, dict):
                yield BadRecord(str(path), "expected a JSON object", line=n)
                continue
            ext = rec.get(id_key, rec.get("_id" if not beir else "id"))
            if ext is None or str(ext).strip() == "":
                yield BadRecord(str(path), "missing document id", line=n, field=id_key)
                continue
            text = rec.get("text")
            if not isinstance(text, str) or not text.strip():
                yield BadRecord(str(path), "missing or empty text", line=n, field="text")
                continue
            title = rec.get("title") or ""
            if not isinstance(title, str):
                yield BadRecord(str(path), "title must be a string", line=n, field="title")
                continue
            meta: dict[str, Any] = {k: v for k, v in rec.items() if k not in _JSONL_KNOWN}
            if isinstance(rec.get("metadata"), dict):
                meta.update(rec["metadata"])
            # The title leads the first chunk, so both lexical and dense search see it.
            body = f"{title.strip()}\n\n{text}" if title.strip() else text
            lang = rec.get("language") or rec.get("lang")
            yield ParsedDoc(str(ext).strip(), title.strip(), build_sections([(None, body, None)]), meta,
                            language=lang if lang in ("en", "zh") else None, where=where)
    if not any_line:
        raise BadRecord(str(path), "empty file")


def iter_pubmedqa(path: Path) -> Iterator[Item]:
    """One document per PMID: labelled abstract sections as sections; MeSH terms and year as metadata.

    The question, long answer and decision are the benchmark's labels, so they never enter the text."""
    try:
        data = json.loads(read_text(path))
    except json.JSONDecodeError as exc:
        raise BadRecord(str(path), f"invalid JSON: {exc.msg}", line=exc.lineno) from None
    if not isinstance(data, dict):
        raise BadRecord(str(path), "expected a JSON object mapping PMID to record (PubMedQA ori_pqal.json)")
    for pmid, rec in data.items():
        if not isinstance(rec, dict) or not isinstance(rec.get("CONTEXTS"), list):
            yield BadRecord(str(path), "record has no CONTEXTS list", field=f"{pmid}.CONTEXTS")
            continue
        contexts = rec["CONTEXTS"]
        labels = rec.get("LABELS") or [None] * len(contexts)
        if len(labels) != len(contexts):
            yield BadRecord(str(path), "LABELS and CONTEXTS differ in length", field=f"{pmid}.LABELS")
            continue
        sections = build_sections([(lbl.title() if isinstance(lbl, str) else None, str(ctx), None)
                                   for lbl, ctx in zip(labels, contexts)])
        if not sections:
            yield BadRecord(str(path), "empty abstract", field=f"{pmid}.CONTEXTS")
            continue
        meta: dict[str, Any] = {"pmid": str(pmid), "mesh": list(rec.get("MESHES") or [])}
        year = rec.get("YEAR")
        if year:
            meta["year"] = int(year) if str(year).isdigit() else str(year)
        yield ParsedDoc(str(pmid), f"PMID {pmid}", sections, meta, where=f"{path} [{pmid}]")
