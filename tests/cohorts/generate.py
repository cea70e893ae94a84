"""Writes tests/cohorts/*.json: the Circe test set (run once; the JSON files are what tests and bench read)."""
import json
from pathlib import Path

C = {  # concept id → (name, vocabulary, code)
    192671: ("Gastrointestinal hemorrhage", "SNOMED", "74474003"), 1118084: ("celecoxib", "RxNorm", "140587"),
    1124300: ("Diclofenac", "RxNorm", "3355"), 1177480: ("Ibuprofen", "RxNorm", "5640"),
    1112807: ("Aspirin", "RxNorm", "1191"), 1125315: ("Acetaminophen", "RxNorm", "161"),
    4283893: ("Sinusitis", "SNOMED", "36971009"), 4024958: ("Throat culture", "SNOMED", "117015009"),
    80180: ("Osteoarthritis", "SNOMED", "396275006"), 4027663: ("Peptic ulcer", "SNOMED", "13200003"),
    28060: ("Streptococcal sore throat", "SNOMED", "43878008"), 9201: ("Inpatient Visit", "Visit", "IP"),
    257012: ("Chronic sinusitis", "SNOMED", "40055000"), 4112343: ("Acute viral pharyngitis", "SNOMED", "195662009"),
    4107731: ("Subcutaneous immunotherapy", "SNOMED", "180256009"), 4323208: ("History of appendectomy", "SNOMED", "428251008"),
    4304110: ("Allergy to mold", "SNOMED", "419474003"), 260139: ("Acute bronchitis", "SNOMED", "10509002"), 35208414: ("Gastrointestinal hemorrhage, unspecified", "ICD10CM", "K92.2"),
}


def item(cid, desc=True, excl=False, mapped=False):
    n, v, code = C[cid]
    return {"concept": {"CONCEPT_ID": cid, "CONCEPT_NAME": n, "VOCABULARY_ID": v, "CONCEPT_CODE": code},
            "includeDescendants": desc, "isExcluded": excl, "includeMapped": mapped}


def cs(i, name, *items):
    return {"id": i, "name": name, "expression": {"items": list(items)}}


def crit(domain, codeset=None, first=False):
    body = {} if codeset is None else {"CodesetId": codeset}
    if first:
        body["First"] = True
    return {domain: body}


def window(start, end, index_end=False, event_end=False):
    def ep(d):
        return {"Coeff": -1 if d is not None and d < 0 else 1, **({} if d is None else {"Days": abs(d)})}
    w = {"Start": ep(start), "End": ep(end)}
    if start is None:
        w["Start"] = {"Coeff": -1}
    if end is None:
        w["End"] = {"Coeff": 1}
    if index_end:
        w["UseIndexEnd"] = True
    if event_end:
        w["UseEventEnd"] = True
    return w


def corr(c, start, end, typ=2, count=1, ignore_op=False, **kw):
    out = {"Criteria": c, "StartWindow": window(start, end, **kw), "Occurrence": {"Type": typ, "Count": count}}
    if ignore_op:
        out["IgnoreObservationPeriod"] = True
    return out


def group(typ="ALL", criteria=(), demo=(), groups=(), count=None):
    g = {"Type": typ, "CriteriaList": list(criteria), "DemographicCriteriaList": list(demo), "Groups": list(groups)}
    if count is not None:
        g["Count"] = count
    return g


def rule(name, g):
    return {"name": name, "expression": g}


def cohort(sets, primary, rules=(), prior=0, post=0, plimit="All", qlimit="First", elimit="All", end=None, pad=0,
           additional=None):
    d = {"ConceptSets": sets, "PrimaryCriteria": {"CriteriaList": primary,
                                                  "ObservationWindow": {"PriorDays": prior, "PostDays": post},
                                                  "PrimaryCriteriaLimit": {"Type": plimit}},
         "QualifiedLimit": {"Type": qlimit}, "ExpressionLimit": {"Type": elimit}, "InclusionRules": list(rules),
         "CensoringCriteria": [], "CollapseSettings": {"CollapseType": "ERA", "EraPad": pad}, "CensorWindow": {}}
    if end:
        d["EndStrategy"] = {"DateOffset": {"DateField": end[0], "Offset": end[1]}}
    if additional:
        d["AdditionalCriteria"] = additional
    return d


GI, CELE, DICL = cs(0, "GI bleed", item(192671)), cs(1, "celecoxib", item(1118084)), cs(2, "diclofenac", item(1124300))
NSAID = cs(3, "NSAIDs", item(1118084), item(1124300), item(1177480), item(1112807))
defs = {
    # The four Eunomia study cohorts (Eunomia's createCohorts: celecoxib, diclofenac, GiBleed, NSAIDs).
    "eunomia_celecoxib": cohort([CELE], [crit("DrugExposure", 1, first=True)], plimit="First"),
    "eunomia_diclofenac": cohort([DICL], [crit("DrugExposure", 2, first=True)], plimit="First"),
    "eunomia_gi_bleed": cohort([GI], [crit("ConditionOccurrence", 0)]),
    "eunomia_nsaids": cohort([cs(3, "NSAIDs", item(1118084), item(1124300))], [crit("DrugExposure", 3, first=True)],
                             plimit="First"),
    # Rules, windows and occurrence types.
    "sinusitis_throat_culture_30d": cohort(
        [cs(0, "sinusitis", item(4283893)), cs(1, "throat culture", item(4024958))],
        [crit("ConditionOccurrence", 0)], qlimit="All",
        rules=[rule("throat culture within 30 days", group(criteria=[corr(crit("Measurement", 1), 0, 30)]))]),
    "gi_bleed_after_nsaid_no_prior_bleed": cohort(
        [GI, NSAID], [crit("ConditionOccurrence", 0)], prior=365, qlimit="All",
        rules=[rule("NSAID in the prior 365 days", group(criteria=[corr(crit("DrugExposure", 3), -365, 0)])),
               rule("no GI bleed before", group(criteria=[corr(crit("ConditionOccurrence", 0), None, -1, typ=0, count=0)])),
               rule("female, 40 or older", group(demo=[{"Age": {"Value": 40, "Op": "gte"},
                                                        "Gender": [{"CONCEPT_ID": 8532}]}]))]),
    "celecoxib_new_users_attrition": cohort(
        [CELE, GI, cs(4, "osteoarthritis", item(80180))], [crit("DrugExposure", 1)], prior=365, elimit="First",
        rules=[rule("osteoarthritis ever before", group(criteria=[corr(crit("ConditionOccurrence", 4), None, 0)])),
               rule("at most one GI bleed in prior year", group(criteria=[corr(crit("ConditionOccurrence", 0), -365, 0, typ=1, count=1)])),
               rule("age 18-64", group(demo=[{"Age": {"Value": 18, "Op": "bt", "Extent": 64}}]))],
        end=("StartDate", 30)),
    "any_of_nested_groups": cohort(
        [cs(0, "strep", item(28060)), cs(1, "acetaminophen", item(1125315)), cs(2, "throat culture", item(4024958)),
         cs(3, "pharyngitis", item(4112343))],
        [crit("ConditionOccurrence", 0)], qlimit="All",
        rules=[rule("treated or cultured", group("ANY", criteria=[corr(crit("DrugExposure", 1), 0, 7)],
                                                 groups=[group("ALL", criteria=[corr(crit("Measurement", 2), -7, 7),
                                                                                corr(crit("ConditionOccurrence", 3), -30, 0)])])),
               rule("at least 2 of 3", group("AT_LEAST", count=2, criteria=[
                   corr(crit("DrugExposure", 1), -30, 30), corr(crit("Measurement", 2), -30, 30),
                   corr(crit("ConditionOccurrence", 3), -365, 0)])),
               rule("at most 1 of 2", group("AT_MOST", count=1, criteria=[
                   corr(crit("ConditionOccurrence", 3), -30, 0), corr(crit("Measurement", 2), 0, 3)]))]),
    "exactly_two_pharyngitis_prior_year": cohort(
        [cs(0, "pharyngitis", item(4112343))], [crit("ConditionOccurrence", 0)], qlimit="All",
        rules=[rule("exactly 2 more in the prior year", group(criteria=[corr(crit("ConditionOccurrence", 0), -365, -1, typ=0, count=2)]))]),
    "era_pad_end_offset_enddate": cohort(
        [cs(0, "acetaminophen", item(1125315))], [crit("DrugExposure", 0)], end=("EndDate", 14), pad=30),
    "index_end_event_end_ignore_op": cohort(
        [cs(0, "sinusitis", item(4283893)), cs(1, "strep", item(28060))], [crit("ConditionOccurrence", 0)], qlimit="All",
        rules=[rule("strep ends after the sinusitis ends", group(criteria=[
            corr(crit("ConditionOccurrence", 1), 0, 60, index_end=True, event_end=True, ignore_op=True)]))]),
    "inpatient_visit_prior_year": cohort([cs(0, "inpatient", item(9201, desc=False))], [crit("VisitOccurrence", 0)],
                                         prior=365, post=30, plimit="Last"),
    "observation_domain": cohort([cs(0, "history/allergy", item(4323208), item(4304110))], [crit("Observation", 0)]),
    "observation_period_female_bronchitis": cohort(
        [cs(0, "acute bronchitis", item(260139))], [crit("ObservationPeriod")],
        rules=[rule("female", group(demo=[{"Gender": [{"CONCEPT_ID": 8532}]}])),
               rule("acute bronchitis in the period", group(criteria=[corr(crit("ConditionOccurrence", 0), None, None)]))]),
    "death_any": cohort([], [crit("Death")]),
    "procedure_last_with_exclusion": cohort(
        [cs(0, "immunotherapy", item(4107731)), cs(1, "sinusitis but not chronic", item(4283893), item(257012, excl=True))],
        [crit("ProcedureOccurrence", 0)], plimit="Last",
        rules=[rule("non-chronic sinusitis ever", group(criteria=[corr(crit("ConditionOccurrence", 1), None, None)]))]),
    "mapped_icd10_gi_bleed": cohort([cs(0, "K92.2 mapped", item(35208414, desc=False, mapped=True))],
                                    [crit("ConditionOccurrence", 0)]),
    "additional_criteria_qualified_first": cohort(
        [cs(0, "sinusitis", item(4283893)), cs(1, "amoxi/clav", item(1125315))], [crit("ConditionOccurrence", 0)],
        additional=group(criteria=[corr(crit("DrugExposure", 1), 0, 14)]), qlimit="Last", elimit="First"),
    "two_entry_domains": cohort(
        [GI, cs(1, "peptic ulcer", item(4027663))], [crit("ConditionOccurrence", 0), crit("ConditionOccurrence", 1, first=True)],
        pad=90, end=("StartDate", 180)),
}
out = Path("tests/cohorts")
for old in out.glob("*.json"):
    old.unlink()
for name, d in defs.items():
    (out / f"{name}.json").write_text(json.dumps(d, indent=1) + "\n")
print(len(defs))
