"""Where things live: the project tree and the git-ignored runtime state folder."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


def project_root() -> Path:
    """The repository root (``IM1_PROJECT_ROOT`` overrides; otherwise two levels above this package)."""
    env = os.environ.get("IM1_PROJECT_ROOT")
    if env:
        return Path(env).resolve()
    return Path(__file__).resolve().parents[2]


def state_dir() -> Path:
    """Runtime state (embedded PostgreSQL, Airflow home, demo keys, archive, work folders).

    Defaults to ``<project>/.im1``, which is git-ignored; ``IM1_STATE_DIR`` overrides.
    """
    env = os.environ.get("IM1_STATE_DIR")
    return Path(env).resolve() if env else project_root() / ".im1"


def include_dir() -> Path:
    return project_root() / "include"


def specs_dir() -> Path:
    return include_dir() / "specs"


def dbt_project_dir() -> Path:
    return Path(os.environ.get("IM1_DBT_PROJECT_DIR", project_root() / "dbt_project")).resolve()


def dags_dir() -> Path:
    return project_root() / "dags"


def feeds_file() -> Path:
    """The feed configuration file (``IM1_FEEDS_FILE`` overrides ``include/feeds.yaml``)."""
    env = os.environ.get("IM1_FEEDS_FILE")
    return Path(env).resolve() if env else include_dir() / "feeds.yaml"


def docs_dir() -> Path:
    """Generated documentation sites served to operators (``dbt/``: dbt docs; GX Data Docs stay in the GX project)."""
    return state_dir() / "docs"


def dbt_docs_dir() -> Path:
    """Where the transform DAG's ``dbt docs generate`` writes the dbt docs site (index.html, static_index.html)."""
    return docs_dir() / "dbt"


def lineage_dir() -> Path:
    """The default OpenLineage file transport writes one JSON event per file here."""
    return state_dir() / "lineage"


def private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) readable by the owner only; returns it."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


@contextlib.contextmanager
def owner_only() -> Iterator[None]:
    """Files and folders created in the block (by us or by a library: GX, dbt docs) are the owner's
    alone (umask 077: files 0600, folders 0700). The umask is the process's, restored afterwards."""
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)
