"""Structure-aware chunking: sections, then sentences and table rows, then a budget in the model's own tokens."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from medkb.text import CJK_IDEOGRAPHS, CJK_PUNCTUATION, sentence_spans

# A chunk's target size in the model's own tokens: MiniLM's whole 256-token window, half of e5's 512, so a
# chunk is one focused passage for either model; never more than the model reads (Budget.for_embedder).
TARGET_TOKENS = 256
DEFAULT_OVERLAP = 32

_CJK = CJK_IDEOGRAPHS + CJK_PUNCTUATION
# A Markdown table row (HTML tables arrive as these): one unit, since a row cut in two loses its meaning.
_TABLE_ROW = re.compile(r"^[ \t]*\|.*\|[ \t]*$", re.M)
# Units an over-long sentence may be cut between: a whole whitespace-free run, or one CJK character.
_UNIT_RE = re.compile(f"[{_CJK}]|[^\\s{_CJK}]+")


class TokenCounter(Protocol):
    max_tokens: int

    def token_count(self, text: str) -> int: ...


@dataclass(frozen=True)
class Budget:
    """A chunk's size limit in the embedding model's own tokens (special tokens and any prefix included)."""

    max_tokens: int
    count: Callable[[str], int]
    overlap: int = DEFAULT_OVERLAP

    @classmethod
    def for_embedder(cls, model: TokenCounter, target: int = TARGET_TOKENS,
                     overlap: int = DEFAULT_OVERLAP) -> Budget:
        """The target size, or the model's whole window when that is smaller: nothing is ever truncated."""
        return cls(min(target, model.max_tokens), model.token_count, overlap)


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


def _split_long(text: str, start: int, end: int, room: int, cost: Callable[[str], int]) -> list[tuple[int, int]]:
    """Cut one over-long sentence at word boundaries (or between CJK characters), never inside one."""
    out: list[tuple[int, int]] = []
    words = [(m.start() + start, m.end() + start) for m in _UNIT_RE.finditer(text[start:end])]
    if not words:
        return [(start, end)]
    cur_start, cur_tokens, last_end = words[0][0], 0, words[0][0]
    for ws, we in words:
        t = cost(text[ws:we])
        if cur_tokens + t > room and cur_tokens > 0:
            out.append((cur_start, last_end))
            cur_start, cur_tokens = ws, 0
        cur_tokens += t
        last_end = we
    out.append((cur_start, last_end))
    return out


def chunk_sections(sections: list[Section], budget: Budget) -> list[Piece]:
    """Pack whole sentences (and table rows) into chunks the model reads whole: at most ``budget.max_tokens``
    of its own tokens; consecutive chunks of a section share up to ``budget.overlap`` tokens of trailing
    sentences. Chunks never cross a section boundary."""
    fixed = budget.count("")  # special tokens and any prefix, paid once per chunk

    def cost(t: str) -> int:
        return max(budget.count(t) - fixed, 1)

    room = max(budget.max_tokens - fixed, 1)
    pieces: list[Piece] = []
    for sec in sections:
        sents: list[tuple[int, int, int]] = []
        for s, e in units(sec.text):
            t = cost(sec.text[s:e])
            if t > room:
                sents.extend((a, b, cost(sec.text[a:b])) for a, b in _split_long(sec.text, s, e, room, cost))
            else:
                sents.append((s, e, t))
        i = 0
        while i < len(sents):
            j, total = i, 0
            while j < len(sents) and (total + sents[j][2] <= room or j == i):
                total += sents[j][2]
                j += 1
            # Costs add up only nearly (tokens can merge or split at a join): the real count decides.
            real = budget.count(sec.text[sents[i][0] : sents[j - 1][1]])
            while real > budget.max_tokens and j - 1 > i:
                j -= 1
                real = budget.count(sec.text[sents[i][0] : sents[j - 1][1]])
            start, end = sents[i][0], sents[j - 1][1]
            pieces.append(Piece(
                text=sec.text[start:end], section=sec.title, start=sec.offset + start,
                end=sec.offset + end, tokens=real, page=sec.page,
            ))
            if j >= len(sents):
                break
            # Step back over trailing sentences that fit in the overlap, but always make progress.
            k, back = j, 0
            while k - 1 > i and back + sents[k - 1][2] <= budget.overlap:
                k -= 1
                back += sents[k][2]
            i = k
    return pieces
