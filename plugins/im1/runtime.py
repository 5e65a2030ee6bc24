"""The environment every local process runs with: Airflow (home, metadata DB, connections),
dbt (profile values) and the platform's own settings.

``im1 env`` prints it for a shell; ``im1 run -- <command>`` runs a command in it with the
embedded warehouse up; the demo, ``make airflow`` and the tests all build on :func:`local_env`.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from im1 import paths
from im1.warehouse import (
    AIRFLOW_DB,
    BI_READER,
    CONN_BI,
    CONN_LOADER,
    CONN_TRANSFORMER,
    LOADER,
    TRANSFORMER,
    Warehouse,
    embedded_server,
    from_env,
)
from im1.warehouse.embedded import EmbeddedPostgres


def venv_bin() -> Path:
    return Path(sys.executable).parent


def connections_file() -> Path:
    return paths.state_dir() / "secrets" / "connections.json"


def airflow_metadata_url(wh: Warehouse) -> str:
    explicit = os.environ.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN")
    if explicit:
        return explicit
    return wh.url_for(AIRFLOW_DB).replace("postgresql://", "postgresql+psycopg2://", 1)


def local_env(wh: Warehouse, *, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment variables for Airflow, dbt and the im1 CLI against warehouse ``wh``."""
    state = paths.state_dir()
    secrets = connections_file()
    if not secrets.exists():
        paths.private_dir(secrets.parent)
        secrets.write_text("{}\n")
        secrets.chmod(0o600)
    env = dict(os.environ if base is None else base)
    env.update(
        {
            "IM1_PROJECT_ROOT": str(paths.project_root()),
            "IM1_STATE_DIR": str(state),
            "IM1_FEEDS_FILE": str(paths.feeds_file()),
            "PATH": f"{venv_bin()}{os.pathsep}{env.get('PATH', '')}",
            # Airflow
            "AIRFLOW_HOME": str(state / "airflow"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(paths.dags_dir()),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(paths.project_root() / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": airflow_metadata_url(wh),
            "AIRFLOW__SECRETS__BACKEND": "airflow.secrets.local_filesystem.LocalFilesystemBackend",
            "AIRFLOW__SECRETS__BACKEND_KWARGS": json.dumps({"connections_file_path": str(secrets)}),
            "AIRFLOW__WORKERS__SECRETS_BACKEND": "airflow.secrets.local_filesystem.LocalFilesystemBackend",
            "AIRFLOW__WORKERS__SECRETS_BACKEND_KWARGS": json.dumps({"connections_file_path": str(secrets)}),
            "AIRFLOW__LOGGING__COLORED_CONSOLE_LOG": "False",
            f"AIRFLOW_CONN_{CONN_LOADER.upper()}": wh.airflow_conn_uri(LOADER),
            f"AIRFLOW_CONN_{CONN_TRANSFORMER.upper()}": wh.airflow_conn_uri(TRANSFORMER),
            f"AIRFLOW_CONN_{CONN_BI.upper()}": wh.airflow_conn_uri(BI_READER),
            # dbt run by hand (the DAG builds its profile from the transformer connection)
            "DBT_PROFILES_DIR": str(paths.dbt_project_dir()),
            "DBT_SEND_ANONYMOUS_USAGE_STATS": "False",
            "IM1_DBT_HOST": wh.host,
            "IM1_DBT_PORT": str(wh.port),
            "IM1_DBT_USER": TRANSFORMER,
            "IM1_DBT_PASSWORD": wh.role_password(TRANSFORMER) or "trust",
            "IM1_DBT_DBNAME": wh.database,
        }
    )
    if not os.environ.get("IM1_WAREHOUSE_URL"):
        env.pop("IM1_WAREHOUSE_URL", None)
    return env


@contextlib.contextmanager
def warehouse_up(server: EmbeddedPostgres | None = None) -> Iterator[Warehouse]:
    """The configured warehouse, with the embedded server running for the block if that is the one used."""
    if os.environ.get("IM1_WAREHOUSE_URL"):
        yield from_env()
        return
    srv = server or embedded_server()
    with srv.running():
        yield from_env(srv)


def run(cmd: list[str], env: dict[str, str], *, check: bool = True, quiet: bool = False,
        cwd: Path | None = None) -> subprocess.CompletedProcess:
    kw: dict = {"env": env, "cwd": str(cwd or paths.project_root())}
    if quiet:
        kw.update(stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    res = subprocess.run(cmd, **kw)
    if check and res.returncode != 0:
        out = f"\n{res.stdout[-4000:]}" if quiet and res.stdout else ""
        raise RuntimeError(f"command failed (exit {res.returncode}): {' '.join(cmd)}{out}")
    return res


def airflow_cmd(*args: str) -> list[str]:
    return [str(venv_bin() / "airflow"), *args]


def dbt_cmd(*args: str) -> list[str]:
    return [str(venv_bin() / "dbt"), *args, "--project-dir", str(paths.dbt_project_dir()),
            "--profiles-dir", str(paths.dbt_project_dir())]
