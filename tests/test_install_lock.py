"""The install is reproducible: every package medkb needs, directly or through another, is pinned in constraints.txt,
and the environment the tests run in is the one the lock describes (checked against the real installed metadata)."""

from __future__ import annotations

import importlib.util
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]


def _lock_tool():  # scripts/ is not a package; load the lock generator by path
    spec = importlib.util.spec_from_file_location("lock", ROOT / "scripts" / "lock.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        specs = list(req.specifier)
        assert len(specs) == 1 and specs[0].operator == "==", f"constraints.txt: {line!r} is not an exact pin"
        pins[canonicalize_name(req.name)] = specs[0].version
    return pins


def test_every_dependency_is_pinned_and_installed_at_its_pin() -> None:
    lock = _lock_tool()
    needed, missing = lock.closure(lock.declared())
    assert not missing, f"declared or required but not installed: {sorted(missing)}"
    pins = _pins()
    unpinned = sorted(needed - pins.keys())
    assert not unpinned, f"not pinned in constraints.txt (run scripts/lock.py): {unpinned}"
    # A local build label (torch 2.13.0+cpu) satisfies the public pin, as it does for pip.
    wrong = {n: (metadata.version(n), pins[n]) for n in sorted(needed)
             if metadata.version(n).split("+", 1)[0] != pins[n]}
    assert not wrong, f"installed version differs from constraints.txt (installed, pinned): {wrong}"


def test_install_uses_the_lock_and_the_known_good_llm_runtime() -> None:
    """llama-cpp-python 0.3.36 segfaults on its first completion; the lock must hold the tested 0.3.16."""
    assert _pins()["llama-cpp-python"] == "0.3.16"
    makefile = (ROOT / "Makefile").read_text()
    assert "-c $(LOCK)" in makefile and "LOCK := constraints.txt" in makefile
