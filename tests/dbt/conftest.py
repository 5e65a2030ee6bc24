"""Scratch warehouses for the dbt tests: a database of its own on the test server, bootstrapped
like the real one, so a dbt build here never touches the session warehouse's staging state."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from im1 import paths
from im1.warehouse import Warehouse
from im1.warehouse.bootstrap import bootstrap
from im1dev import runtime


@pytest.fixture(scope="module")
def scratch(warehouse):
    name = f"im1_dbt_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(warehouse.url_for("postgres"), autocommit=True) as c:
        c.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    wh = Warehouse(admin_url=warehouse.url_for(name), embedded=warehouse.embedded)
    bootstrap(wh)
    yield wh
    with psycopg.connect(warehouse.url_for("postgres"), autocommit=True) as c:
        c.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))


def run_dbt(wh: Warehouse, target: Path, *args: str) -> list[dict]:
    """Run dbt against ``wh`` with its own target folder; return run_results' results."""
    res = subprocess.run(runtime.dbt_cmd(*args, "--no-use-colors", "--target-path", str(target)),
                         env=runtime.local_env(wh), cwd=paths.project_root(), capture_output=True, text=True)
    assert res.returncode == 0, (res.stdout + res.stderr)[-6000:]
    return json.loads((target / "run_results.json").read_text())["results"]
