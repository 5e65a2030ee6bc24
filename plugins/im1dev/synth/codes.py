"""The code catalogue the synthetic supplier draws from.

Clinical clusters (registers, resolutions, BP, HbA1c, smoking, frailty, QOF exclusions and
invitations, sensitive, opt-out) come from the PCD refset copies in ``dbt_project/seeds/codelists`` (the dbt seeds); everyday background concepts and medicines
come from ``include/synth`` (synthetic-only catalogues). Each concept gets a stable EMIS
``CodeId`` and a placeholder TPP CTV3 code, derived from the concept id so every run agrees.
"""

from __future__ import annotations

import csv
import functools
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from im1 import paths

# cluster name -> code list file (dbt_project/seeds/codelists)
CLUSTER_FILES = {
    "dm": "dm_cod.csv",
    "hyp": "hyp_cod.csv",
    "ast": "ast_cod.csv",
    "copd": "copd_cod.csv",
    "chd": "chd_cod.csv",
    "af": "afib_cod.csv",
    "ckd": "ckd_cod.csv",
    "dep": "depr_cod.csv",
    "ckd12": "ckd1and2_cod.csv",
    "bp": "bp_cod.csv",
    "bp_sys": "bp_systolic_qof.csv",
    "bp_dia": "bp_diastolic_qof.csv",
    "bp_home": "bp_home_amb_qof.csv",
    "hba1c": "ifcchbam_cod.csv",
    "serfruc": "serfruc_cod.csv",
    "lsmok": "lsmok_cod.csv",
    "exsmok": "exsmok_cod.csv",
    "frailty:mild": "mildfrail_cod.csv",
    "frailty:moderate": "modfrail_cod.csv",
    "frailty:severe": "sevfrail_cod.csv",
    "htmax": "htmax_cod.csv",
    "hyppcapu": "hyppcapu_cod.csv",
    "hyppcadec": "hyppcadec_cod.csv",
    "bpdec": "bpdec_cod.csv",
    "hypinvite": "hypinvite_cod.csv",
    "dmmax": "dmmax_cod.csv",
    "dmpcapu": "dmpcapu_cod.csv",
    "dmpcadec": "dmpcadec_cod.csv",
    "bldtestdec": "bldtestdec_cod.csv",
    "dminvite": "dminvite_cod.csv",
    "sensitive": "gp_sensitive_exclusion_refsets.csv",
}
CONDITIONS = ("dm", "hyp", "ast", "copd", "chd", "af", "ckd", "dep")

# the resolved-code list of each condition (CHD has none)
RESOLVED_FILES = {
    "dm": "dmres_cod.csv",
    "hyp": "hypres_cod.csv",
    "ast": "astres_cod.csv",
    "copd": "copdres_cod.csv",
    "af": "afibres_cod.csv",
    "ckd": "ckdres_cod.csv",
    "dep": "depres_cod.csv",
}
# drug (dm+d) lists: the drugs of the catalogue in them are asthma treatment (AST005)
ASTHMA_DRUGS_FILE = "asttrt_cod.csv"

BP_PARENT = "75367002"  # Blood pressure (in BP_COD)
BP_SYSTOLIC = "271649006"  # Systolic blood pressure
BP_DIASTOLIC = "271650006"  # Diastolic blood pressure
HBA1C = "999791000000106"  # HbA1c level - IFCC standardised
T1_DISSENT = "827241000000103"
T1_DISSENT_WITHDRAWN = "827261000000102"
FRAILTY_LEVELS = ("mild", "moderate", "severe")


@dataclass(frozen=True)
class Concept:
    code: str  # SNOMED CT concept id
    term: str
    kind: str = "code"  # code | value | referral
    unit: str = ""
    low: float = 0.0
    high: float = 0.0
    weight: float = 0.0

    @property
    def emis_code_id(self) -> int:
        return emis_code_id(self.code)

    @property
    def ctv3(self) -> str:
        return ctv3_code(self.code)


@dataclass(frozen=True)
class Drug:
    key: str
    name: str
    dmd: str
    condition: str
    repeat: bool
    quantity: int
    unit: str
    dosage: str
    course_days: int
    cost_pence: int

    @property
    def emis_code_id(self) -> int:
        return emis_code_id("drug:" + self.key)


def quantity_text(q: float) -> str:
    """A quantity as a supplier writes it: 28, 2.5."""
    return str(int(q)) if float(q).is_integer() else f"{q:g}"


def _stable_int(text: str, lo: int, span: int) -> int:
    h = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")
    return lo + h % span


def emis_code_id(code: str) -> int:
    """A stable EMIS CodeId for a concept (EMIS code ids are EMIS-internal integers)."""
    return _stable_int("emis:" + code, 1_000_000, 8_999_000_000)


def ctv3_code(code: str) -> str:
    """A placeholder 5-character CTV3-style code (the synthetic TPP rows need one; not a real CTV3 code)."""
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ0123456789"
    n = _stable_int("ctv3:" + code, 0, 34**4)
    out = "Y"
    for _ in range(4):
        n, r = divmod(n, 34)
        out += alphabet[r]
    return out


@dataclass
class Catalogue:
    concepts: dict[str, Concept] = field(default_factory=dict)
    clusters: dict[str, list[str]] = field(default_factory=dict)
    resolved: dict[str, str] = field(default_factory=dict)  # condition -> resolved code
    general: list[Concept] = field(default_factory=list)
    general_weights: list[float] = field(default_factory=list)
    referral: Concept | None = None
    drugs: list[Drug] = field(default_factory=list)
    asthma_drugs: frozenset = frozenset()  # dm+d ids of the asthma treatment list (ASTTRT_COD)

    def concept(self, code: str) -> Concept:
        return self.concepts[code]

    def drugs_for(self, condition: str) -> list[Drug]:
        return [d for d in self.drugs if d.condition == condition]


def _read(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@functools.cache
def catalogue() -> Catalogue:
    cat = Catalogue()
    lists = paths.dbt_project_dir() / "seeds" / "codelists"
    for cluster, fname in CLUSTER_FILES.items():
        codes = []
        for r in _read(lists / fname):
            code = r["code"].strip()
            if not code.isdigit():
                continue
            cat.concepts.setdefault(code, Concept(code, r["term"].strip()))
            codes.append(code)
        cat.clusters[cluster] = codes
    for cond, fname in RESOLVED_FILES.items():
        rows = _read(lists / fname)
        cat.resolved[cond] = rows[0]["code"]
        for r in rows:
            cat.concepts.setdefault(r["code"], Concept(r["code"], r["term"]))
    for r in _read(lists / "opt_out_dissent_codes.csv"):
        cat.concepts.setdefault(r["code"], Concept(r["code"], r["term"]))
    for r in _read(paths.include_dir() / "synth" / "general_codes.csv"):
        c = Concept(
            r["code"], r["term"], r["kind"], r["unit"],
            float(r["low"] or 0), float(r["high"] or 0), float(r["weight"] or 0),
        )
        cat.concepts[c.code] = c
        if c.kind == "referral":
            cat.referral = c
        elif c.weight > 0:
            cat.general.append(c)
            cat.general_weights.append(c.weight)
    for code in (BP_PARENT, BP_SYSTOLIC, BP_DIASTOLIC, HBA1C):
        assert code in cat.concepts, f"{code} missing from the code lists"
    cat.asthma_drugs = frozenset(r["code"] for r in _read(lists / ASTHMA_DRUGS_FILE))
    for r in _read(paths.include_dir() / "synth" / "drugs.csv"):
        cat.drugs.append(
            Drug(r["key"], r["name"], r["dmd_product_code"], r["condition"], r["repeat"] == "1",
                 int(r["quantity"]), r["unit"], r["dosage"], int(r["course_days"]), int(r["cost_pence"]))
        )
    return cat
