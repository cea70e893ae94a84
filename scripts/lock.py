"""Regenerate constraints.txt (the lock) from the installed environment: exact versions of everything pyproject.toml
needs, directly or through another package, with `make install`'s extras.

    .venv/bin/python scripts/lock.py            # rewrite constraints.txt
    .venv/bin/python scripts/lock.py --check    # exit 1 when constraints.txt differs from what it would write
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "constraints.txt"
EXTRAS = ("ontologies", "multilingual", "omop", "eval", "llm-local", "test")  # what `make install` asks for
HEADER = """\
# The lock: exact versions of everything medkb installs, used by `make install` and CI (pip install -c constraints.txt).
# Regenerate after a dependency change: .venv/bin/python scripts/lock.py (tests/test_install_lock.py checks it).
# llama-cpp-python stays at 0.3.16: 0.3.36 segfaults on its first completion (tests/test_llm_local.py).
"""


def declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    for extra in EXTRAS:
        reqs += [Requirement(r) for r in project["optional-dependencies"][extra]]
    return reqs


def closure(roots: list[Requirement]) -> tuple[set[str], set[str]]:
    """(installed names reachable from ``roots`` through Requires-Dist with markers evaluated, names not installed)."""
    seen: set[tuple[str, str]] = set()
    names: set[str] = set()
    missing: set[str] = set()
    stack = [(r, "") for r in roots]
    while stack:
        req, extra = stack.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": extra}):
            continue
        name = canonicalize_name(req.name)
        for ex in ("", *sorted(req.extras)):
            if (name, ex) in seen:
                continue
            seen.add((name, ex))
            try:
                dist = metadata.distribution(name)
            except metadata.PackageNotFoundError:
                missing.add(name)
                continue
            names.add(name)
            stack += [(Requirement(r), ex) for r in dist.requires or []]
    return names - {"medkb"}, missing


def render() -> str:
    names, missing = closure(declared())
    if missing:
        raise SystemExit(f"not installed, cannot pin: {sorted(missing)}")
    # A local build label (torch 2.13.0+cpu) is dropped: the public version is what pip resolves by.
    lines = [f"{n}=={metadata.version(n).split('+', 1)[0]}" for n in sorted(names)]
    return HEADER + "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="only compare; exit 1 when the lock is out of date")
    args = ap.parse_args()
    text = render()
    if args.check:
        same = LOCK.exists() and LOCK.read_text() == text
        print("constraints.txt is up to date" if same else "constraints.txt is out of date: run scripts/lock.py")
        return 0 if same else 1
    LOCK.write_text(text)
    print(f"wrote {LOCK} ({text.count(chr(10)) - HEADER.count(chr(10))} pins)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
