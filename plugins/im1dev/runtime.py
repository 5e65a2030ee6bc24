"""The environment every local process runs with: Airflow (home, metadata DB, connections),
dbt (profile values) and the platform's own settings.

``im1 env`` prints it for a shell; ``im1 run -- <command>`` runs a command in it with the
embedded warehouse up; the demo, ``make airflow`` and the tests all build on :func:`local_env`.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets as _secrets
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
    CONN_MART_READER,
    CONN_TRANSFORMER,
    LOADER,
    MART_READER,
    TRANSFORMER,
    WAREHOUSE_DB,
    Warehouse,
    from_env,
)
from im1.warehouse.pseudonym import PSEUDONYM_KEY_ENV, PSEUDONYM_SETTING, pgoptions_with_key  # noqa: F401 - re-exported
from im1dev.embedded import EmbeddedPostgres


def embedded_server(data_dir: Path | None = None, *, durable: bool = True) -> EmbeddedPostgres:
    """The local embedded PostgreSQL (in the state folder) that stands in for a warehouse server."""
    return EmbeddedPostgres(data_dir or paths.state_dir() / "pg", durable=durable)


def venv_bin() -> Path:
    return Path(sys.executable).parent


def connections_file() -> Path:
    return paths.state_dir() / "secrets" / "connections.json"


def pseudonym_key_file() -> Path:
    return paths.state_dir() / "secrets" / "pseudonym_key"


def pseudonym_key() -> str:
    """The secret key of ``person_key`` (HMAC-SHA256 of the NHS number).

    ``IM1_PSEUDONYM_KEY`` when set (a deployment takes it from its secret store); otherwise a key
    generated once for this machine (``secrets.token_hex(32)``) and kept in the private state
    folder, mode 0600, like the demo keys. Never a default in the repository.
    """
    key = os.environ.get(PSEUDONYM_KEY_ENV, "").strip()
    if key:
        return key
    path = pseudonym_key_file()
    if not path.exists():
        paths.private_dir(path.parent)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(_secrets.token_hex(32) + "\n")
        try:
            os.link(tmp, path)  # atomic; the first process to get here wins
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return path.read_text().strip()


def airflow_metadata_url(wh: Warehouse) -> str:
    explicit = os.environ.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN")
    if explicit:
        return explicit
    return wh.url_for(AIRFLOW_DB).replace("postgresql://", "postgresql+psycopg2://", 1)


def local_env(wh: Warehouse, *, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment variables for Airflow, dbt and the im1 CLI against warehouse ``wh``."""
    state = paths.private_dir(paths.state_dir())  # Airflow logs, lineage, docs, archive: the owner's alone
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
            # cosmos: its caches (profiles, partial parse) in the state folder, no usage telemetry
            "AIRFLOW__COSMOS__CACHE_DIR": str(state / "cosmos"),
            "AIRFLOW__COSMOS__ENABLE_TELEMETRY": "False",
            f"AIRFLOW_CONN_{CONN_LOADER.upper()}": wh.airflow_conn_uri(LOADER),
            f"AIRFLOW_CONN_{CONN_TRANSFORMER.upper()}": wh.airflow_conn_uri(TRANSFORMER),
            f"AIRFLOW_CONN_{CONN_BI.upper()}": wh.airflow_conn_uri(BI_READER),
            f"AIRFLOW_CONN_{CONN_MART_READER.upper()}": wh.airflow_conn_uri(MART_READER),
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
    key = env.get(PSEUDONYM_KEY_ENV) or pseudonym_key()
    env[PSEUDONYM_KEY_ENV] = key
    env["PGOPTIONS"] = pgoptions_with_key(key, env.get("PGOPTIONS", ""))
    if not os.environ.get("IM1_WAREHOUSE_URL"):
        env.pop("IM1_WAREHOUSE_URL", None)
    env.update(docs_env(env))
    env.update(lineage_env(env))
    return env


def docs_env(env: dict[str, str]) -> dict[str, str]:
    """The cosmos dbt-docs plugin (Airflow >= 3.1): a "dbt docs" entry in the UI's Browse menu serving the
    site the transform DAG's ``dbt_docs`` task writes. Left alone when ``AIRFLOW__COSMOS__DBT_DOCS_PROJECTS``
    is already set (e.g. docs published to object storage)."""
    if env.get("AIRFLOW__COSMOS__DBT_DOCS_PROJECTS"):
        return {}
    projects = {"im1": {"dir": str(paths.dbt_docs_dir()), "index": "static_index.html", "name": "dbt docs"}}
    return {"AIRFLOW__COSMOS__DBT_DOCS_PROJECTS": json.dumps(projects)}


LINEAGE_SETTINGS = ("AIRFLOW__OPENLINEAGE__TRANSPORT", "AIRFLOW__OPENLINEAGE__CONFIG_PATH",
                    "AIRFLOW__OPENLINEAGE__CONFIG_CONN_ID", "OPENLINEAGE_URL", "OPENLINEAGE_CONFIG")


def lineage_env(env: dict[str, str]) -> dict[str, str]:
    """OpenLineage for every Airflow task (the provider's listener; cosmos adds the dbt datasets).

    Any OpenLineage setting already present wins (``OPENLINEAGE_URL`` for an HTTP backend such as
    Marquez, ``AIRFLOW__OPENLINEAGE__TRANSPORT``, a config file or connection). Otherwise
    ``IM1_LINEAGE`` picks the transport: ``file`` (default: one JSON event per file under
    ``<state>/lineage/``), ``console`` (the task log) or ``off``.
    """
    out = {}
    if not env.get("AIRFLOW__OPENLINEAGE__NAMESPACE") and not env.get("OPENLINEAGE_NAMESPACE"):
        out["AIRFLOW__OPENLINEAGE__NAMESPACE"] = "im1"
    if any(env.get(k) for k in LINEAGE_SETTINGS) or env.get("AIRFLOW__OPENLINEAGE__DISABLED"):
        return out
    kind = env.get("IM1_LINEAGE", "file").strip().lower()
    if kind == "off":
        out["AIRFLOW__OPENLINEAGE__DISABLED"] = "True"
    elif kind == "console":
        out["AIRFLOW__OPENLINEAGE__TRANSPORT"] = json.dumps({"type": "console"})
    elif kind == "file":
        folder = paths.lineage_dir()
        folder.mkdir(parents=True, exist_ok=True)
        out["AIRFLOW__OPENLINEAGE__TRANSPORT"] = json.dumps(
            {"type": "file", "log_file_path": str(folder / "event"), "append": False})
    else:
        raise ValueError(f"IM1_LINEAGE={kind!r}: expected file, console or off")
    return out


def configured_warehouse() -> Warehouse:
    """The warehouse as configured: IM1_WAREHOUSE_URL, else the embedded server (not started here)."""
    if os.environ.get("IM1_WAREHOUSE_URL"):
        return from_env()
    return from_env(embedded_server().url(WAREHOUSE_DB))


@contextlib.contextmanager
def warehouse_up(server: EmbeddedPostgres | None = None) -> Iterator[Warehouse]:
    """The configured warehouse, with the embedded server running for the block if that is the one used."""
    if os.environ.get("IM1_WAREHOUSE_URL"):
        yield from_env()
        return
    srv = server or embedded_server()
    with srv.running():
        yield from_env(srv.url(WAREHOUSE_DB))


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
