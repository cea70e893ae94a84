"""Text handling shared by every layer: CJK ranges, language, sentences, stop words, stems and search terms."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Sequence
from itertools import chain
from typing import Any, Final

import numpy as np

# CJK ideographs: Extension A, the Unified block, compatibility ideographs.
CJK_IDEOGRAPHS: Final = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
# CJK punctuation and full-width forms: one character each, like an ideograph, when counting or cutting text.
CJK_PUNCTUATION: Final = "\u3000-\u303f\uff00-\uffef"
CJK_RE: Final = re.compile(f"[{CJK_IDEOGRAPHS}]")
_LATIN_RE = re.compile(r"[A-Za-z]")

# Sentence ends: Chinese full stop/exclamation/question (no space follows them), or Latin .!? + space
# + something that starts a sentence. Closing quotes/brackets stay with their sentence.
_SENT_END = (
    r"[。！？!?]+[”’」』）)\"']*"
    rf"|(?<=[.!?])[\"')\]]*\s+(?=[A-Z0-9\"'(\[{CJK_IDEOGRAPHS}])"
)
_SENT_OR_PARAGRAPH = re.compile(_SENT_END + r"|\n\s*\n")  # prose: a single newline is a wrapped line
_SENT_OR_LINE = re.compile(_SENT_END + r"|\n+")  # generated answers: every line (list item) stands alone

# Lucene's English stop words (what bm25s ships as STOPWORDS_EN).
STOPWORDS_EN: Final = frozenset(
    """a an and are as at be but by for if in into is it no not of on or such that the their then there these
    they this to was will with""".split()
)
# Function words beyond Lucene's list: they carry no content when checking whether a claim matches a passage.
FUNCTION_WORDS_EN: Final = STOPWORDS_EN | frozenset(
    """about after all also among any been before being between both can could did do does during each from
    had has have he her his how however i it's its least less may me might more most my only other our over
    same shall she should so some than therefore those thus too under us very we were what when where which
    while who whom why would yes you your them""".split()
)
# What the lexical index and its queries drop: every function word. Lucene's 33 keep the words questions
# are made of ("what", "which", "how", "does"), which then match every passage that uses them: on bioasq-dev
# BM25 nDCG@10 rose 0.7987 -> 0.8279 with this list (LanceDB's own list gives 0.8264; docs/reports, issue 11).
SEARCH_STOPWORDS_EN: Final = FUNCTION_WORDS_EN
# Function words that are also clinical abbreviations when written in capitals: ALL (acute lymphoblastic
# leukaemia), WHO, US (ultrasound, the United States), ME (myalgic encephalomyelitis), CAN (cardiac autonomic
# neuropathy). Written so, they are kept as terms.
ACRONYM_STOPWORDS_EN: Final = frozenset("all us who me can".split())
# Words of study reporting that every abstract shares ("patients", "results"): not evidence of support.
REPORTING_WORDS_EN: Final = frozenset(
    "patients patient study studies results result used using use based shown show showed compared".split()
)
# Frequent Chinese function words: they match everywhere and only add noise to scores.
STOPWORDS_ZH: Final = frozenset(
    "的 了 和 是 在 有 与 及 或 等 中 对 为 以 上 下 也 就 都 而 被 把 之 其 这 那 什么 哪些 如何 怎么 吗 呢".split()
)

_TERM = re.compile(f"[{CJK_IDEOGRAPHS}]+|[a-z0-9]+(?:'[a-z]+)?")
_local = threading.local()  # PyStemmer objects are not safe to share between threads
_zh_lock = threading.Lock()
_zh_words: dict[str, int | None] = {}  # words added to the Chinese segmenter's dictionary (word → frequency)
_zh_loaded: set[str] = set()


def is_cjk(text: str) -> bool:
    return bool(CJK_RE.search(text))


def detect_language(text: str, threshold: float = 0.25) -> str:
    """``zh`` when CJK ideographs are at least ``threshold`` of the letters, else ``en``.

    The threshold is low because Chinese clinical text is full of Latin abbreviations and drug names."""
    sample = text[:20000]
    cjk = len(CJK_RE.findall(sample))
    latin = len(_LATIN_RE.findall(sample))
    return "zh" if cjk and cjk / (cjk + latin) >= threshold else "en"


def sentence_spans(text: str, *, line_breaks: bool = False) -> list[tuple[int, int]]:
    """(start, end) of each sentence, surrounding whitespace excluded. Blank lines always end a sentence;
    with ``line_breaks`` every newline does (generated answers, where a line is a list item)."""
    spans: list[tuple[int, int]] = []
    pos = 0
    for m in (_SENT_OR_LINE if line_breaks else _SENT_OR_PARAGRAPH).finditer(text):
        end = m.end() if not m.group().isspace() else m.start()
        _add_trimmed(text, pos, end, spans)
        pos = m.end()
    _add_trimmed(text, pos, len(text), spans)
    return spans


def _add_trimmed(text: str, start: int, end: int, out: list[tuple[int, int]]) -> None:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    if end > start:
        out.append((start, end))


def stem_words(words: list[str]) -> list[str]:
    """English Snowball stems (PyStemmer), one stemmer per thread."""
    st = getattr(_local, "stemmer", None)
    if st is None:
        import Stemmer

        st = _local.stemmer = Stemmer.Stemmer("english")
    return list(st.stemWords(words))


def add_chinese_words(words: Iterable[str | tuple[str, int]]) -> None:
    """Teach the Chinese segmenter words it would split (drug and disease names), optionally with a frequency.

    Takes effect for every later call of ``terms``; safe to call before or after the segmenter loads."""
    with _zh_lock:
        for w in words:
            word, freq = (w, None) if isinstance(w, str) else w
            if word.strip():
                _zh_words[word.strip()] = freq


def _jieba() -> Any:
    import jieba  # imported only when Chinese text shows up (it takes a second to load)

    if len(_zh_loaded) != len(_zh_words):
        with _zh_lock:
            for word, freq in _zh_words.items():
                if word not in _zh_loaded:
                    jieba.add_word(word, freq)
                    _zh_loaded.add(word)
    return jieba


def segment_chinese(run: str) -> list[str]:
    """Words of a run of Chinese characters (jieba, with the words given to ``add_chinese_words``)."""
    return [w for w in _jieba().lcut(run) if w.strip()]


_CAPS = re.compile(r"(?<![A-Za-z])[A-Z]{2,}(?![a-z])")  # a word in capitals somewhere: look at case


def _latin_tokens(text: str, acronyms: frozenset[str]) -> list[str]:
    """The ``_TERM`` tokens of ``text`` lower-cased, except a word of ``acronyms`` written in capitals, which is
    returned in capitals ("ALL") so that no stop list drops it."""
    lower = text.lower()
    if not acronyms or len(lower) != len(text) or not _CAPS.search(text):  # lower() lengthens a few letters (İ)
        return _TERM.findall(lower)
    out = []
    for m in _TERM.finditer(lower):
        tok = m.group()
        out.append(tok.upper() if tok in acronyms and text[m.start():m.end()].isupper() else tok)
    return out


def terms(text: str, stop: frozenset[str] = SEARCH_STOPWORDS_EN,
          acronyms: frozenset[str] = ACRONYM_STOPWORDS_EN) -> list[str]:
    """Search terms: lower-cased English words minus ``stop``, Snowball-stemmed; Chinese runs segmented
    minus function words. The one tokenizer of the lexical index and of the claim-support check.

    A word of ``acronyms`` written in capitals ("ALL", "WHO") is kept even when ``stop`` has it."""
    words: list[str] = []
    out: list[str] = []
    for tok in _latin_tokens(text, acronyms):
        if CJK_RE.match(tok):
            out.extend(w for w in segment_chinese(tok) if w not in STOPWORDS_ZH)
        elif tok.isupper():  # a capitalised acronym (lower-cased tokens never are)
            words.append(tok.lower())
        elif tok not in stop and (len(tok) > 1 or tok.isdigit()):
            words.append(tok)
    return stem_words(words) + out


class TermCoder:
    """``terms`` of many texts at once, as ids of an append-only vocabulary (``vocab``: term -> id).

    Gives every text the same bag of terms as ``terms(text, stop)``; each distinct word is filtered and
    stemmed once and remembered, so a million texts cost a regex pass and a dictionary lookup per word
    instead of a stemmer call. Chinese runs are segmented once per distinct run, with the segmenter's
    dictionary as it is at that time (words added later apply from the next coder).
    """

    def __init__(self, vocab: dict[str, int], stop: frozenset[str] = SEARCH_STOPWORDS_EN,
                 acronyms: frozenset[str] = ACRONYM_STOPWORDS_EN) -> None:
        self.vocab, self.stop, self.acronyms = vocab, stop, acronyms
        self._word: dict[str, int] = {}  # lower-cased token -> term id; -1 dropped; -2 several (Chinese run)
        self._multi: dict[str, list[int]] = {}

    def _learn(self, new: Iterable[str]) -> None:
        latin, vocab = [], self.vocab
        for tok in new:
            if CJK_RE.match(tok):
                ids = [vocab.setdefault(w, len(vocab)) for w in segment_chinese(tok) if w not in STOPWORDS_ZH]
                self._word[tok] = ids[0] if len(ids) == 1 else (-1 if not ids else -2)
                if len(ids) > 1:
                    self._multi[tok] = ids
            elif tok.isupper() or (tok not in self.stop and (len(tok) > 1 or tok.isdigit())):
                latin.append(tok)
            else:
                self._word[tok] = -1
        for tok, stem in zip(latin, stem_words([t.lower() for t in latin])):
            self._word[tok] = vocab.setdefault(stem, len(vocab))

    def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(terms per text, every text's term ids one after the other), int64 both."""
        toks = [_latin_tokens(t, self.acronyms) for t in texts]
        flat = list(chain.from_iterable(toks))
        new = set(flat).difference(self._word)
        if new:
            self._learn(new)
        ids = np.fromiter(map(self._word.__getitem__, flat), dtype=np.int64, count=len(flat))
        doc = np.repeat(np.arange(len(toks)), np.fromiter(map(len, toks), dtype=np.int64, count=len(toks)))
        if (ids == -2).any():  # a Chinese run that is several words: expanded in place, in order
            parts = [self._multi[w] if i == -2 else [i] for w, i in zip(flat, ids.tolist())]
            doc = np.repeat(doc, [len(p) for p in parts])
            ids = np.fromiter(chain.from_iterable(parts), dtype=np.int64, count=doc.size)
        keep = ids >= 0
        return np.bincount(doc[keep], minlength=len(texts)).astype(np.int64), ids[keep]


_NON_CONTENT = FUNCTION_WORDS_EN | REPORTING_WORDS_EN


def content_terms(text: str) -> set[str]:
    """The content words of a text (stemmed; Chinese segmented), for overlap between a claim and a passage."""
    return {t for t in terms(text, _NON_CONTENT, frozenset()) if len(t) > 2 or t.isdigit() or is_cjk(t)}
