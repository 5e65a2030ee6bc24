"""Fixtures for the dbt tests: warehouse databases of the test's own on the session's server,
bootstrapped like the real one (so full refreshes and "nothing changed" checks see only the test's
deliveries and never the session warehouse's staging state), and dbt run against them through the
project's helpers (``im1dev.runtime.dbt_cmd`` / ``local_env``, the profile in dbt_project/profiles.yml)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from im1.warehouse import LOADER, Warehouse
from im1.warehouse.bootstrap import bootstrap
from im1dev import runtime
from tests.ingest.conftest import Site, site  # noqa: F401 - the ingest tests' supplier site fixture


@contextlib.contextmanager
def scratch_warehouse(warehouse: Warehouse, prefix: str) -> Iterator[Warehouse]:
    """A fresh, bootstrapped warehouse database, dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    wh = Warehouse(admin_url=warehouse.url_for(name), embedded=warehouse.embedded)
    bootstrap(wh)  # creates the database
    try:
        yield wh
    finally:
        with psycopg.connect(warehouse.url_for("postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))


@contextlib.contextmanager
def _environ(env: dict[str, str]) -> Iterator[None]:
    """``os.environ`` is ``env`` inside the block, and as it was afterwards."""
    import os

    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@dataclasses.dataclass
class Dbt:
    """dbt against one warehouse database; its target folder is the test's own (the project's
    target/manifest.json, which the transform DAG loads, is left alone)."""

    wh: Warehouse
    target: Path

    def __call__(self, *args: str, check: bool = True) -> bool:
        """Run dbt in this process (dbt's programmatic runner: importing dbt costs seconds per
        subprocess); the environment is the warehouse's for the call only. True when dbt succeeded."""
        from dbt.cli.main import dbtRunner

        env = runtime.local_env(self.wh)
        argv = [*runtime.dbt_cmd(*args, "--no-use-colors", "--target-path", str(self.target),
                                 "--log-path", str(self.target / "logs"))[1:]]
        log = self.target / "logs" / "dbt.log"
        start = log.stat().st_size if log.exists() else 0
        with _environ(env):
            res = dbtRunner().invoke(argv)
        if check and not res.success:
            text = log.read_text(errors="replace")[start:] if log.exists() else ""
            raise AssertionError(f"dbt {' '.join(args)} failed: {res.exception or ''}\n{text[-6000:]}")
        return res.success

    def results(self) -> list[dict]:
        """The last invocation's run_results."""
        return json.loads((self.target / "run_results.json").read_text())["results"]


def run_dbt(wh: Warehouse, target: Path, *args: str) -> list[dict]:
    """Run dbt against ``wh`` with its own target folder; return run_results' results."""
    dbt = Dbt(wh, target)
    dbt(*args)
    return dbt.results()


@dataclasses.dataclass
class TransformDb:
    wh: Warehouse
    dbt: Dbt

    @property
    def loader_url(self) -> str:
        return self.wh.role_url(LOADER)

    def connect(self) -> psycopg.Connection:
        return psycopg.connect(self.wh.admin_url, autocommit=True)


@pytest.fixture(scope="module")
def scratch(warehouse):
    with scratch_warehouse(warehouse, "im1_dbt") as wh:
        yield wh


@pytest.fixture(scope="session")
def dbt_target(tmp_path_factory) -> Path:
    # one target folder for the session: dbt's partial parsing carries over between invocations
    return tmp_path_factory.mktemp("dbt_target")


@pytest.fixture()
def tdb(warehouse, dbt_target):
    """A fresh, bootstrapped warehouse database for one test, dropped afterwards."""
    with scratch_warehouse(warehouse, "im1_tx") as wh:
        yield TransformDb(wh, Dbt(wh, dbt_target))


@pytest.fixture()
def tsite(site, tdb) -> Site:  # noqa: F811 - the imported fixture
    """The ingest tests' supplier site, loading into the test's own database."""
    return dataclasses.replace(site, loader_url=tdb.loader_url)
