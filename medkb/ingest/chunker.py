"""Structure-aware chunking: sections, then sentences (English and Chinese), then a token budget with overlap."""

from __future__ import annotations

import re
from dataclasses import dataclass

from medkb.text import CJK_IDEOGRAPHS, CJK_PUNCTUATION, sentence_spans

# all-MiniLM-L6-v2 truncates at 256 word pieces; staying near 200 estimated tokens leaves room for the
# estimate's error and the special tokens, so nothing a chunk says is silently cut off by the model.
DEFAULT_MAX_TOKENS = 200
DEFAULT_OVERLAP = 32

_CJK = CJK_IDEOGRAPHS + CJK_PUNCTUATION
# A token for the estimate: one CJK character, one run of letters/digits, or one other symbol.
_TOKEN_RE = re.compile(f"[{_CJK}]|[^\\W_]+|[^\\s]", re.UNICODE)
# A Markdown table row (HTML tables arrive as these): one unit, since a row cut in two loses its meaning.
_TABLE_ROW = re.compile(r"^[ \t]*\|.*\|[ \t]*$", re.M)
# Units an over-long sentence may be cut between: a whole whitespace-free run, or one CJK character.
_UNIT_RE = re.compile(f"[{_CJK}]|[^\\s{_CJK}]+")


@dataclass(frozen=True)
class Section:
    """A run of text under one heading (or one PDF page); ``offset`` is where it starts in the document."""

    text: str
    title: str | None = None
    page: int | None = None
    offset: int = 0


@dataclass(frozen=True)
class Piece:
    """One chunk before embedding: its text is exactly ``document_text[start:end]``."""

    text: str
    section: str | None
    start: int
    end: int
    tokens: int
    page: int | None


def estimate_tokens(text: str) -> int:
    """A cheap, slightly pessimistic estimate of BERT word pieces (long words split into several)."""
    n = 0
    for t in _TOKEN_RE.findall(text):
        n += 1 if len(t) <= 6 else 1 + (len(t) - 3) // 4
    return n


def units(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence, except that a table row is one unit however many sentences it has."""
    out: list[tuple[int, int]] = []
    pos = 0
    for row in _TABLE_ROW.finditer(text):
        out.extend((pos + a, pos + b) for a, b in sentence_spans(text[pos : row.start()]))
        line = row.group()
        out.append((row.start() + len(line) - len(line.lstrip()), row.end() - len(line) + len(line.rstrip())))
        pos = row.end()
    out.extend((pos + a, pos + b) for a, b in sentence_spans(text[pos:]))
    return out


def _split_long(text: str, start: int, end: int, max_tokens: int) -> list[tuple[int, int]]:
    """Cut one over-long sentence at word boundaries (or between CJK characters), never inside one."""
    out: list[tuple[int, int]] = []
    units = [(m.start() + start, m.end() + start) for m in _UNIT_RE.finditer(text[start:end])]
    if not units:
        return [(start, end)]
    cur_start, cur_tokens, last_end = units[0][0], 0, units[0][0]
    for us, ue in units:
        t = estimate_tokens(text[us:ue])
        if cur_tokens + t > max_tokens and cur_tokens > 0:
            out.append((cur_start, last_end))
            cur_start, cur_tokens = us, 0
        cur_tokens += t
        last_end = ue
    out.append((cur_start, last_end))
    return out


def chunk_sections(
    sections: list[Section], max_tokens: int = DEFAULT_MAX_TOKENS, overlap: int = DEFAULT_OVERLAP
) -> list[Piece]:
    """Pack whole sentences into chunks of at most ``max_tokens``; consecutive chunks of a section share
    up to ``overlap`` tokens of trailing sentences. Chunks never cross a section boundary."""
    pieces: list[Piece] = []
    for sec in sections:
        sents: list[tuple[int, int, int]] = []
        for s, e in units(sec.text):
            t = estimate_tokens(sec.text[s:e])
            if t > max_tokens:
                sents.extend((a, b, estimate_tokens(sec.text[a:b])) for a, b in _split_long(sec.text, s, e, max_tokens))
            else:
                sents.append((s, e, t))
        i = 0
        while i < len(sents):
            j, total = i, 0
            while j < len(sents) and (total + sents[j][2] <= max_tokens or j == i):
                total += sents[j][2]
                j += 1
            start, end = sents[i][0], sents[j - 1][1]
            pieces.append(Piece(
                text=sec.text[start:end], section=sec.title, start=sec.offset + start,
                end=sec.offset + end, tokens=total, page=sec.page,
            ))
            if j >= len(sents):
                break
            # Step back over trailing sentences that fit in the overlap, but always make progress.
            k, back = j, 0
            while k - 1 > i and back + sents[k - 1][2] <= overlap:
                k -= 1
                back += sents[k][2]
            i = k
    return pieces
