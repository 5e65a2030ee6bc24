"""Repository hygiene: pinned lock, generated files up to date, no secrets, CI wired to make test."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit  # no service: `make test-unit` runs it

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
    from im1dev import dbtgen

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


PRODUCT = [*(ROOT / "plugins" / "im1").rglob("*.py"), ROOT / "plugins" / "im1_airflow_plugin.py",
           *(ROOT / "dags").glob("*.py")]
_TOOLING_IMPORT = re.compile(r"^\s*(from|import)\s+im1dev\b", re.M)


def test_the_product_never_imports_the_tooling():
    """plugins/im1 (what the Airflow image ships), its Airflow plugin and the DAGs never import the
    development tooling (im1dev: synthetic supplier, demo, benchmarks, test servers, local runtime)
    - not in a module, not inside a function, not through another module."""
    assert [str(p.relative_to(ROOT)) for p in PRODUCT if _TOOLING_IMPORT.search(p.read_text())] == []
    modules = sorted(".".join(p.relative_to(ROOT / "plugins").with_suffix("").parts).removesuffix(".__init__")
                     for p in (ROOT / "plugins" / "im1").rglob("*.py"))
    probe = ("import importlib, sys\n"
             f"for m in {modules!r}:\n    importlib.import_module(m)\n"
             "print(sorted(n for n in sys.modules if n == 'im1dev' or n.startswith('im1dev.')))")
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip() == "[]", f"importing the product loaded tooling: {res.stdout}"


_LEDGER_WRITE = re.compile(r"\b(insert\s+into|update|delete\s+from|truncate)\s+(table\s+)?ingest\.", re.I)


def test_only_the_ledger_writes_the_ledger():
    """Every status change of a batch or file goes through im1.ingest.ledger (its transitions), so
    the rules of what may follow what live in one place. The tooling may reset its own demo and
    benchmark feeds."""
    writers = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "plugins" / "im1").rglob("*.py")
                     if _LEDGER_WRITE.search(p.read_text()))
    assert writers == ["plugins/im1/ingest/ledger.py"]
