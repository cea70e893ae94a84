"""PHI removal from free text before storage: the patient's known identifiers, then patterns, then other names."""

from __future__ import annotations

import datetime as dt
import importlib
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache

from medkb.text import CJK_IDEOGRAPHS

PATIENT, NAME, ADDRESS, PHONE, EMAIL, ID, DATE, URL = (
    "[PATIENT]", "[NAME]", "[ADDRESS]", "[PHONE]", "[EMAIL]", "[ID]", "[DATE]", "[URL]")

_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December")
_MON = r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec)[a-z]*\.?"

# Step 2, patterns: what identifies anyone whoever they are. Order matters: URLs and emails before the
# digit runs inside them; same separator twice in dates, so ranges such as "30.0-39.9" are not dates.
_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"https?://\S+|www\.\S+", re.I), URL),
    (re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"), EMAIL),
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I), ID),
    (re.compile(r"\b\d{3}-\d{2}-\d{4}\b"), ID),  # US SSN
    (re.compile(r"(?:\+?\d{1,3}[\s.-]?)?(?:\(\d{3}\)\s?|\b\d{3}[\s.-])\d{3}[\s.-]\d{4}\b"), PHONE),
    (re.compile(r"(?:\+?86[\s-]?)?(?<!\d)1[3-9]\d[\s-]?\d{4}[\s-]?\d{4}(?!\d)"), PHONE),  # Chinese mobile
    (re.compile(r"(?<!\d)0\d{2,3}-\d{7,8}(?!\d)"), PHONE),  # Chinese landline with area code
    (re.compile(r"\b\d{4}([-/.])\d{1,2}\1\d{1,2}(?:[T ][\d:.]+Z?)?\b"), DATE),
    (re.compile(r"\b\d{1,2}([-/.])\d{1,2}\1\d{2,4}\b"), DATE),
    (re.compile(rf"\b{_MON}\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}}\b", re.I), DATE),
    (re.compile(rf"\b\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?{_MON}\s+\d{{4}}\b", re.I), DATE),
    (re.compile(r"\d{4}\s*年\s*\d{1,2}\s*月(?:\s*\d{1,2}\s*[日号])?"), DATE),
    (re.compile(r"(?<!\d)\d{1,2}\s*月\s*\d{1,2}\s*[日号]"), DATE),
    (re.compile(r"\b(?:MRN|SSN|DL|ID|NHS|MR|Medical record|Record)\s*(?:number|no\.?|#)?[:#\s]*[A-Z0-9-]*\d[A-Z0-9-]{3,}\b",
                re.I), ID),
    (re.compile(r"(?:病历号|住院号|门诊号|身份证号?|医保卡号|电话|手机)[:：\s]*[0-9A-Za-z-]{4,}"), ID),
    # Long digit runs and letter-digit ids (licences, passports, record numbers, Chinese ID cards).
    # Clinical codes are kept in their own columns, never in free text, so nothing is lost here.
    (re.compile(r"\b[A-Z]{0,3}\d{7,}[A-Z]{0,3}\b|(?<!\d)\d{17}[\dXx](?!\d)"), ID),
]

# Step 3 cues: words after which a capitalised word is a person's name.
_TITLES = r"(?:Dr|Doctor|Mr|Mrs|Ms|Miss|Mx|Prof|Professor|Nurse|Sister|Rev|Sr|Jr)\.?"
_KIN = (r"(?:daughter|son|wife|husband|mother|father|mum|mom|dad|brother|sister|grandson|granddaughter|"
        r"grandmother|grandfather|niece|nephew|aunt|uncle|cousin|partner|fianc[ée]e?|spouse|neighbou?r|friend|"
        r"carer|caregiver|guardian|daughter-in-law|son-in-law|stepson|stepdaughter|roommate|landlord|employer)")
_TITLE_WORDS = frozenset("mr mrs ms miss mx dr doctor prof professor rev sr jr".split())
_CAP = r"[A-Z][a-z'’-]+"
_NAME_RUN = rf"{_CAP}(?:\s+(?:[A-Z]\.\s*)?{_CAP})?"
_TITLED = re.compile(rf"\b{_TITLES}\s+(?:[A-Z]\.\s*)?{_NAME_RUN}")
_KINNED = re.compile(rf"\b({_KIN}(?:'s)?(?:,|\s+(?:named|called|is|was))?\s+)({_NAME_RUN})")
_NAMED = re.compile(rf"\b((?:named|called|signed|seen by|reviewed by|discussed with)\s+)({_NAME_RUN})")
_BEFORE_KIN = re.compile(rf"\b({_NAME_RUN})(\s*\((?:{_KIN})\))", re.I)
# A capitalised word that is an eponym or a department, not a person ("Parkinson's disease", "Down syndrome").
_EPONYM_TAIL = re.compile(r"^(?:'s|’s)?\s+(?:disease|syndrome|sign|test|score|scale|classification|criteria|"
                          r"palsy|phenomenon|reflex|maneuver|manoeuvre|procedure|operation|hospital|clinic|"
                          r"ward|unit|centre|center)\b", re.I)
_CAP_WORD = re.compile(r"\b[A-Z][a-z]{2,}(?:['’-][A-Za-z]+)?\b")
_FULL_NAME = re.compile(rf"\b[A-Z][a-z]{{2,}}\s+(?:[A-Z]\.\s*)?{_CAP}\b")
# Capitalised first names that are also ordinary English words or months: only removed with a cue.
_WORD_NAMES = frozenset(
    "will may mark bill hope grace faith joy june april august rose frank pat sue art ray dawn amber summer iris "
    "ivy lily jack guy rich mike drew wade gene dean major king young long brown white green black chase lane "
    "page reed rush sage sky star storm sunny tiny penny holly daisy ginger heather olive pearl ruby crystal "
    "precious patience honor justice hunter parker carter cooper baker mason miles price rich case will".split())

_ZH_KIN = ("女儿|儿子|妻子|丈夫|老伴|爱人|母亲|父亲|妈妈|爸爸|哥哥|姐姐|弟弟|妹妹|孙子|孙女|外孙|外孙女|儿媳|女婿|"
           "邻居|朋友|同事|家属|监护人|保姆")
ZH_COMMON_SURNAMES = 100  # Faker's zh_CN surnames are in order of frequency; rarer ones are everyday characters
_ZH_TITLE = "医生|医师|大夫|护士|护师|主任|教授|先生|女士|小姐|老师|同志|师傅"
_HAN = f"[{CJK_IDEOGRAPHS}]"


@dataclass
class KnownIdentifiers:
    """What the source record says about one patient: every value removed wherever that patient's free text
    repeats it. ``other_names`` are people the record names (contacts, relatives, the GP)."""

    names: list[str] = field(default_factory=list)  # full names as written ("Walter J. Fenwick", "张伟")
    name_parts: list[str] = field(default_factory=list)  # given, family, prefix, suffix, maiden ...
    other_names: list[str] = field(default_factory=list)
    addresses: list[str] = field(default_factory=list)  # lines, city, district, postcode, full text
    phones: list[str] = field(default_factory=list)
    emails: list[str] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)  # record ids, MRN, SSN, licences, passports
    birth_dates: list[dt.date] = field(default_factory=list)

    def values(self) -> list[tuple[str, str]]:
        """(value, placeholder) for every known value, longest first so that full forms go before parts."""
        out: list[tuple[str, str]] = []
        for n in self.names:
            out.extend((form, PATIENT) for form in name_forms(n))
            out.extend((part, PATIENT) for part in n.replace(",", " ").split()  # "Walter", "Fenwick" alone
                       if part.strip(".").casefold() not in _TITLE_WORDS)
        out.extend((p, PATIENT) for p in self.name_parts)
        for n in self.other_names:
            out.extend((form, NAME) for form in name_forms(n))
        out.extend((a, ADDRESS) for a in self.addresses)
        for ph in self.phones:
            out.extend((form, PHONE) for form in _phone_forms(ph))
        out.extend((e, EMAIL) for e in self.emails)
        out.extend((i, ID) for i in self.ids)
        for d in self.birth_dates:
            out.extend((form, DATE) for form in date_forms(d))
        seen: dict[str, str] = {}
        for value, tag in out:
            v = " ".join(str(value).split())
            # A one-letter initial or a two-letter Latin fragment would remove half the text.
            if len(v) >= 3 or (len(v) == 2 and any(_is_han(c) for c in v)):
                seen.setdefault(v.casefold(), tag)
        return sorted(((v, t) for v, t in seen.items()), key=lambda vt: -len(vt[0]))


def _is_han(c: str) -> bool:
    return bool(re.match(_HAN, c))


def name_forms(name: str) -> list[str]:
    """A name as notes write it: as given, "Family, Given", "G. Family", "Given Family" without middle names."""
    parts = [p.strip(".,") for p in name.replace(",", " ").split() if p.strip(".,")]
    forms = [name]
    if len(parts) >= 2:
        given, family = parts[0], parts[-1]
        forms += [f"{family}, {given}", f"{family} {given}", f"{given[0]}. {family}", f"{given[0]} {family}",
                  f"{given} {family}", " ".join(parts)]
    return forms


def _phone_forms(phone: str) -> list[str]:
    digits = re.sub(r"\D", "", phone)
    forms = [phone, digits]
    if len(digits) >= 10:
        d = digits[-10:]
        forms += [f"{d[:3]}-{d[3:6]}-{d[6:]}", f"({d[:3]}) {d[3:6]}-{d[6:]}", f"{d[:3]}.{d[3:6]}.{d[6:]}",
                  f"{d[:3]} {d[3:6]} {d[6:]}"]
    return forms


def date_forms(d: dt.date) -> list[str]:
    """The ways notes write one date: ISO, US and European numeric, spelled months, Chinese."""
    month = _MONTHS[d.month - 1]
    return [d.isoformat(), f"{d.month}/{d.day}/{d.year}", f"{d.month:02d}/{d.day:02d}/{d.year}",
            f"{d.day}/{d.month}/{d.year}", f"{d.day:02d}/{d.month:02d}/{d.year}", f"{d.day}.{d.month}.{d.year}",
            f"{month} {d.day}, {d.year}", f"{month} {d.day} {d.year}", f"{d.day} {month} {d.year}",
            f"{month[:3]} {d.day}, {d.year}", f"{d.day} {month[:3]} {d.year}", f"{d.year}年{d.month}月{d.day}日"]


@lru_cache(maxsize=1)
def _name_lists() -> tuple[frozenset[str], frozenset[str], frozenset[str], frozenset[str]]:
    """(English first names, English last names, Chinese surnames, Chinese given-name characters) from
    Faker's locale lists (offline, in the Faker package)."""
    first: set[str] = set()
    last: set[str] = set()
    for loc in ("en_US", "en_GB", "en_IE", "en_NZ", "en_IN"):
        p = importlib.import_module(f"faker.providers.person.{loc}").Provider
        first.update(getattr(p, "first_names", ()))
        last.update(getattr(p, "last_names", ()))
    zh = importlib.import_module("faker.providers.person.zh_CN").Provider
    zh_sur = set(list(zh.last_names)[:ZH_COMMON_SURNAMES])
    zh_given = {c for g in zh.first_names for c in g}
    first = {n for n in first if n.isalpha() and n.lower() not in _WORD_NAMES}
    return frozenset(first), frozenset(last), frozenset(zh_sur), frozenset(zh_given)


class PHIScrubber:
    """Free text → text without identifiers, in three steps (README, "Data and privacy", says exactly what
    each removes): the patient's own known values; patterns; other people's names by cue and by name list."""

    _lock = threading.Lock()

    def __init__(self) -> None:
        with self._lock:
            self.first, self.last, self.zh_surnames, self.zh_given = _name_lists()
        sur = "[" + "".join(sorted(self.zh_surnames)) + "]"
        given = "[" + "".join(sorted(self.zh_given)) + "]"
        # After a kinship word: a common surname, one character, and a second when it is a usual given-name one.
        self._zh_kin = re.compile(rf"((?:{_ZH_KIN})(?:名叫|叫做|叫)?[，,：:\s]*)({sur}{_HAN}{given}?)")
        self._zh_titled = re.compile(rf"({sur}{given}{{0,2}})((?:{_ZH_TITLE}))")
        # Without a cue only the three-character form: on 885k characters of CMeKG's Chinese clinical text it
        # matched 4 times (two-character forms are everyday words: 应在, 方中, 程中).
        self._zh_listed = re.compile(rf"{sur}{given}{{2}}")

    def __call__(self, text: str | None, known: KnownIdentifiers | None = None) -> str | None:
        if text is None:
            return None
        if known is not None:
            text = self.known(text, known)
        text = self.patterns(text)
        return self.other_names(text)

    @staticmethod
    def known(text: str, known: KnownIdentifiers) -> str:
        """Step 1: every value the record holds for this patient, wherever it appears (case-insensitive;
        Latin values as whole words, Chinese values anywhere)."""
        for value, tag in known.values():
            esc = re.escape(value).replace(r"\ ", r"\s+")
            if _is_han(value[0]) or not value[0].isalnum():
                pat = esc
            else:
                pat = rf"(?<![\w]){esc}(?![\w])"
            text = re.sub(pat, tag, text, flags=re.I)
        return text

    @staticmethod
    def patterns(text: str) -> str:
        """Step 2: URLs, emails, UUIDs, SSNs, phone numbers, dates, record numbers and long id runs."""
        for pattern, repl in _PATTERNS:
            text = pattern.sub(repl, text)
        return text

    def other_names(self, text: str) -> str:
        """Step 3: names after titles and kinship words (English and Chinese), "X (daughter)", and names
        from Faker's English and Chinese name lists."""
        text = _TITLED.sub(NAME, text)
        text = _KINNED.sub(lambda m: m.group(1) + NAME, text)
        text = _NAMED.sub(lambda m: m.group(1) + NAME, text)
        text = _BEFORE_KIN.sub(lambda m: NAME + m.group(2) if self._looks_like_name(m.group(1)) else m.group(0),
                               text)
        text = self._zh_kin.sub(lambda m: m.group(1) + NAME, text)
        text = self._zh_titled.sub(lambda m: NAME + m.group(2), text)
        text = self._zh_listed.sub(NAME, text)
        # A listed first name and the capitalised word after it, then listed first names alone. A listed
        # surname alone is not enough: surnames are also eponyms and places ("Parkinson", "Wilson").
        text = _FULL_NAME.sub(lambda m: self._listed(m, text, NAME), text)
        return _CAP_WORD.sub(lambda m: self._listed(m, text, NAME), text)

    def _looks_like_name(self, words: str) -> bool:
        first = words.split()[0]
        return first in self.first or first in self.last or len(words.split()) == 2

    def _listed(self, m: re.Match[str], text: str, tag: str) -> str:
        first = m.group(0).split()[0]
        if first not in self.first or _EPONYM_TAIL.match(m.string[m.end():]):
            return m.group(0)
        return tag


_default: PHIScrubber | None = None


def scrubber() -> PHIScrubber:
    """The process-wide scrubber (its name lists load once, in about a second)."""
    global _default
    if _default is None:
        _default = PHIScrubber()
    return _default


def scrub(text: str | None, known: KnownIdentifiers | None = None) -> str | None:
    return scrubber()(text, known)


def collect(values: Iterable[str | None]) -> list[str]:
    return [v.strip() for v in values if v and v.strip()]
