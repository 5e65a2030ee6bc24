"""docker-compose.yaml: valid for docker-compose, and shaped as the platform needs it.

The file is checked twice: by ``docker-compose config -q`` with the values of ``.env.example``
(skipped, with the reason, only where the docker-compose binary is missing; .ci/run installs it),
and structurally here, always: a health check on every service, the init service gating the others,
scalable workers, the BI tool reading the warehouse as the read-only role, no secret written in
the file, and every variable it needs documented in .env.example.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from tests.stack.compose import COMPOSE_FILE as COMPOSE
from tests.stack.compose import ENV_EXAMPLE, ROOT, VAR
from tests.stack.compose import env_example as read_env_example
from tests.stack.compose import load as load_compose

pytestmark = pytest.mark.unit  # no service: `make test-unit` runs it

AIRFLOW_SERVICES = ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer",
                    "airflow-worker")


@pytest.fixture(scope="module")
def compose() -> dict:
    return load_compose()


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    return read_env_example()


def _env(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def _walk_strings(node):
    if isinstance(node, dict):
        for v in node.values():
            yield from _walk_strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk_strings(v)
    elif isinstance(node, str):
        yield node


def test_docker_compose_validates_the_file_with_env_example():
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("the docker-compose binary is not installed (.ci/run installs the Debian package)")
    res = subprocess.run([binary, "--env-file", str(ENV_EXAMPLE), "-f", str(COMPOSE), "config", "-q"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "not set" not in res.stderr, res.stderr  # every variable has a value or a default
    res = subprocess.run([binary, "--env-file", str(ENV_EXAMPLE), "-f", str(COMPOSE), "config", "--services"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert set(res.stdout.split()) >= {"postgres", "warehouse", "redis", "airflow-init", *AIRFLOW_SERVICES,
                                       "supplier-sftp", "metabase", "metabase-setup"}


def test_the_stack_has_the_services_of_airflows_celery_layout_plus_the_platforms(services):
    assert {"postgres", "warehouse", "redis", "airflow-init", *AIRFLOW_SERVICES, "supplier-sftp", "metabase",
            "metabase-setup"} <= set(services)
    env = _env(services["airflow-scheduler"])
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://redis:6379/")
    assert "@postgres:5432/airflow" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    # Airflow's metadata and the warehouse are separate PostgreSQL servers
    assert services["postgres"]["image"].startswith("postgres:") and services["warehouse"]["image"].startswith(
        "postgres:")
    assert "@warehouse:5432/im1" in env["IM1_WAREHOUSE_URL"]
    assert services["postgres"]["volumes"] != services["warehouse"]["volumes"]


def test_every_service_has_a_healthcheck(services):
    missing = [name for name, s in services.items() if not (s.get("healthcheck") or {}).get("test")]
    assert missing == []
    disabled = [name for name, s in services.items() if s["healthcheck"].get("disable")]
    assert disabled == []


def test_init_gates_every_service_that_needs_it(services):
    gated = [n for n in services if n not in ("postgres", "warehouse", "redis", "airflow-init")]
    for name in gated:
        deps = services[name].get("depends_on") or {}
        assert isinstance(deps, dict), f"{name}: depends_on must use conditions"
        assert deps.get("airflow-init", {}).get("condition") == "service_completed_successfully", name
    init_deps = services["airflow-init"]["depends_on"]
    assert init_deps["postgres"]["condition"] == "service_healthy"
    assert init_deps["warehouse"]["condition"] == "service_healthy"
    assert services["airflow-init"].get("restart") in ("no", None)


def test_airflow_3_components_share_what_they_must(services):
    envs = {n: _env(services[n]) for n in AIRFLOW_SERVICES}
    for key in ("AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CELERY__BROKER_URL", "AIRFLOW__API__SECRET_KEY",
                "AIRFLOW__SECRETS__BACKEND_KWARGS"):
        values = {e.get(key) for e in envs.values()}
        assert len(values) == 1 and None not in values, (key, values)
    assert envs["airflow-worker"]["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == \
        "http://airflow-apiserver:8080/execution/"
    commands = {n: services[n]["command"] for n in AIRFLOW_SERVICES}
    assert commands["airflow-apiserver"][-1] == "api-server"
    assert commands["airflow-dag-processor"][-1] == "dag-processor"  # its own service in Airflow 3
    assert commands["airflow-worker"][-2:] == ["celery", "worker"]
    # the state volume (archive of originals, keys, connections) is shared by every worker
    for n in AIRFLOW_SERVICES:
        assert any(str(v).startswith("im1-state:") for v in services[n]["volumes"]), n


def test_docs_and_lineage_land_on_the_shared_state_volume(services):
    import json

    env = _env(services["airflow-worker"])
    docs = json.loads(env["AIRFLOW__COSMOS__DBT_DOCS_PROJECTS"])["im1"]
    assert docs["dir"].startswith("/var/lib/im1/") and docs["index"] == "static_index.html"
    transport = json.loads(env["AIRFLOW__OPENLINEAGE__TRANSPORT"])
    assert transport["type"] == "file" and transport["log_file_path"].startswith("/var/lib/im1/")
    assert _env(services["airflow-apiserver"])["AIRFLOW__COSMOS__DBT_DOCS_PROJECTS"] == \
        env["AIRFLOW__COSMOS__DBT_DOCS_PROJECTS"]


def test_workers_scale(services):
    worker = services["airflow-worker"]
    assert "container_name" not in worker
    assert "ports" not in worker
    assert "hostname" not in worker


def test_bi_connects_to_the_warehouse_as_the_read_only_role(services):
    setup = _env(services["metabase-setup"])
    assert setup["METABASE_WAREHOUSE_USER"] == "bi_reader"
    assert setup["METABASE_WAREHOUSE_HOST"] == "warehouse"
    assert setup["IM1_BI_READER_PASSWORD"].startswith("${IM1_BI_READER_PASSWORD")
    assert services["metabase-setup"]["command"][-2:] == ["stack", "metabase-setup"]
    assert services["metabase-setup"]["depends_on"]["metabase"]["condition"] == "service_healthy"
    # Metabase itself never gets a warehouse credential other than bi_reader's
    mb = _env(services["metabase"])
    assert not any("warehouse" in v or "IM1_" in v for v in mb.values())
    airflow_bi = _env(services["airflow-scheduler"])["AIRFLOW_CONN_IM1_WAREHOUSE_BI"]
    assert airflow_bi.startswith("postgres://bi_reader:")


def test_supplier_sftp_is_seeded_by_the_generator_in_init(services):
    script = services["airflow-init"]["command"][-1]
    assert "im1 stack init" in script and "im1 synth --feed" in script
    assert "--recipient-key" in script  # encrypted to the consumer key generated at run time
    sftp = services["supplier-sftp"]
    assert "im1 sftp-server" in sftp["command"][-1]
    assert any(str(v).startswith("supplier-data:") for v in sftp["volumes"])
    assert any(str(v).startswith("supplier-data:") for v in services["airflow-init"]["volumes"])
    assert _env(services["airflow-scheduler"])["IM1_DEMO_SFTP_HOST"] == "supplier-sftp"


def test_no_secret_is_written_in_the_file(compose, services):
    secretish = re.compile(r"(PASSWORD|_PASS|SECRET|SECRET_KEY|TOKEN|FERNET_KEY)$")
    for name, service in services.items():
        for key, value in _env(service).items():
            if secretish.search(key) and not key.endswith("_FILE"):
                assert VAR.fullmatch(value) or not value, f"{name}.{key} must be a ${{VAR}} reference"
    # credentials inside URLs are variables too
    cred = re.compile(r"://([^:/@\s]+):([^@\s]*)@")
    for s in _walk_strings(compose):
        for user, password in cred.findall(s):
            assert VAR.fullmatch(password), f"a password written into {s!r}"
            assert VAR.fullmatch(user) or user in ("loader", "transformer", "bi_reader", "mart_reader"), s


def test_env_example_defines_every_required_variable_with_placeholders(compose, env_example):
    used = {m.group(1): m.group(2) or "" for s in _walk_strings(compose) for m in VAR.finditer(s)}
    required = {k for k, mod in used.items() if not mod.startswith(":-")}
    assert required <= set(env_example), sorted(required - set(env_example))
    for k, mod in used.items():
        if k in required:
            assert mod.startswith(":?"), f"${{{k}}} should fail clearly when unset (${{{k}:?...}})"
    for key, value in env_example.items():
        if re.search(r"PASSWORD|SECRET", key):
            assert value.startswith("change-me"), f"{key} in .env.example must be a change-me placeholder"
            assert re.fullmatch(r"[A-Za-z0-9._-]+", value), f"{key}: placeholders must be URL-safe"
    assert ".env" in (ROOT / ".gitignore").read_text().splitlines()


def test_dockerignore_keeps_state_and_secrets_out_of_the_image():
    entries = {ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()
               if ln.strip() and not ln.startswith("#")}
    assert {".venv", ".im1", ".git", ".env", "logs", "dbt_project/target"} <= entries
