"""Repository hygiene: pinned lock, generated files up to date, no secrets, CI wired to make test."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_requirements_is_a_full_pinned_lock():
    lines = [ln.strip() for ln in (ROOT / "requirements.txt").read_text().splitlines()]
    reqs = [ln for ln in lines if ln and not ln.startswith("#")]
    assert len(reqs) > 200
    pinned = re.compile(r"^[A-Za-z0-9_.\-]+(\[[^\]]+\])?==[^\s;]+( ; .+)?$")
    assert [r for r in reqs if not pinned.match(r)] == []
    names = {r.split("==")[0].lower() for r in reqs}
    for must in ("apache-airflow", "astronomer-cosmos", "dbt-core", "dbt-postgres", "great-expectations",
                 "paramiko", "python-gnupg", "psycopg", "pgserver"):
        assert must in names, must


def test_dbt_sources_are_generated_from_the_specs():
    from im1 import dbtgen

    assert dbtgen.stale() == [], "run `im1 dbt gen` and commit the result"


def test_no_key_material_or_state_is_tracked():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.splitlines()
    if not tracked:  # not a git checkout (e.g. an exported tree)
        return
    assert not [f for f in tracked if f.startswith((".im1/", ".venv/"))]
    armour = re.compile("-" * 5 + r"BEGIN [A-Z ]*PRIVATE KEY( BLOCK)?" + "-" * 5)
    offenders = [f for f in tracked if (ROOT / f).is_file() and armour.search((ROOT / f).read_text(errors="ignore"))]
    assert offenders == [], "key material must be generated at run time, never committed"


def test_ci_runs_the_readme_test_command():
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    assert "make test" in (ROOT / "README.md").read_text()
    assert "make demo" in (ROOT / "README.md").read_text()
