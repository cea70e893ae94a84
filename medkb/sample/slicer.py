"""Cuts the committed sample slice out of ../shared/data (PubMedQA-L and Synthea MS, both MIT), reproducibly."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

DATA = Path(__file__).parent / "data"
N_ABSTRACTS = 200
N_PATIENTS = 50


def slice_pubmedqa(src: Path, out: Path, n: int = N_ABSTRACTS) -> int:
    """The first ``n`` PubMedQA-L items in file order, plus every item about multiple sclerosis (the Synthea
    cohort's disease) so the demo patients have literature to match."""
    data = json.loads((src / "ori_pqal.json").read_text())
    about_ms = [k for k, v in data.items() if "sclerosis" in " ".join(v["CONTEXTS"]).lower()]
    keep = list(dict.fromkeys(about_ms + list(data)))[:n]
    target = out / "pubmedqa"
    target.mkdir(parents=True, exist_ok=True)
    (target / "pubmedqa_sample.json").write_text(json.dumps({k: data[k] for k in keep}, indent=1))
    shutil.copyfile(src / "LICENSE", target / "LICENSE")
    return len(keep)


def slice_synthea(src: Path, out: Path, n: int = N_PATIENTS) -> int:
    """The first ``n`` patients (file order) that have at least one medication, and all their rows."""
    with (src / "medications.csv").open(newline="") as f:
        medicated = {r["PATIENT"] for r in csv.DictReader(f)}
    with (src / "patients.csv").open(newline="") as f:
        ids = [r["Id"] for r in csv.DictReader(f) if r["Id"] in medicated][:n]
    keep = set(ids)
    target = out / "synthea"
    target.mkdir(parents=True, exist_ok=True)
    for name, key in (("patients", "Id"), ("conditions", "PATIENT"), ("medications", "PATIENT"),
                      ("procedures", "PATIENT")):
        with (src / f"{name}.csv").open(newline="") as f, (target / f"{name}.csv").open("w", newline="") as g:
            reader = csv.DictReader(f)
            writer = csv.DictWriter(g, fieldnames=reader.fieldnames or [], lineterminator="\n")
            writer.writeheader()
            writer.writerows(r for r in reader if r[key] in keep)
    shutil.copyfile(src / "LICENSE", target / "LICENSE")
    return len(ids)
