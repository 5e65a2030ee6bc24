"""A real, distributed Airflow on loopback for the opt-in Celery tests.

Every Airflow 3 component runs as its own process, as in the Compose stack: the API server
(UI, REST API and the execution API that workers talk to), the scheduler, the DAG processor, the
triggerer and a Celery worker, with a Redis broker and its own PostgreSQL metadata database.
Ports are free loopback ports; every process runs in its own process group and is killed with
its children when the cluster stops (also when the test fails).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql

from im1dev.embedded import free_port

REDIS_HOST = "127.0.0.1"
REDIS_PORT = 6379


def redis_db() -> int:
    """The Redis database number the tests use (``IM1_TEST_REDIS_DB``, default 11), apart from db 0."""
    return int(os.environ.get("IM1_TEST_REDIS_DB", "11"))


def redis_unavailable_reason() -> str | None:
    """None when a Redis server answers PING on 127.0.0.1:6379, else why not."""
    try:
        import redis
    except ImportError as err:  # pragma: no cover - the lock has it
        return f"the redis client is not installed ({err})"
    try:
        client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=redis_db(), socket_connect_timeout=1,
                             socket_timeout=2)
        client.ping()
        client.close()
    except Exception as err:
        return f"no Redis server answers on {REDIS_HOST}:{REDIS_PORT} ({type(err).__name__}: {err})"
    return None


def airflow_bin() -> str:
    return str(Path(sys.executable).parent / "airflow")


@dataclass
class Cluster:
    """Airflow with CeleryExecutor on loopback (see the module docstring)."""

    home: Path
    admin_url: str  # a PostgreSQL URL whose user may create databases (the session's server)
    base_env: dict[str, str]
    queue: str = field(default_factory=lambda: f"im1_test_{uuid.uuid4().hex[:8]}")
    database: str = field(default_factory=lambda: f"airflow_celery_{uuid.uuid4().hex[:8]}")
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    api_port: int = 0
    timings: dict[str, float] = field(default_factory=dict)  # seconds since the cluster started, by milestone

    # -- set-up ---------------------------------------------------------------------------------
    def _url(self, database: str) -> str:
        from im1.warehouse import Warehouse

        return Warehouse(admin_url=self.admin_url).url_for(database)

    @property
    def metadata_url(self) -> str:
        return self._url(self.database)

    @property
    def broker_url(self) -> str:
        return f"redis://{REDIS_HOST}:{REDIS_PORT}/{redis_db()}"

    def env(self) -> dict[str, str]:
        sa_url = self.metadata_url.replace("postgresql://", "postgresql+psycopg2://", 1)
        env = dict(self.base_env)
        env.update({
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": sa_url,
            "AIRFLOW__CELERY__BROKER_URL": self.broker_url,
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + self.metadata_url,
            # tasks spend much of their time waiting on the API server: more slots than cores
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": "8",
            # tasks go to this test's own queue, so another run sharing the Redis DB cannot take them
            "AIRFLOW__OPERATORS__DEFAULT_QUEUE": self.queue,
            "AIRFLOW__CELERY__DEFAULT_QUEUE": self.queue,
            # the workers run tasks through the API server's execution API, with tokens signed by
            # this secret: every component must share it
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.api_port),
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{self.api_port}/execution/",
            "AIRFLOW__API_AUTH__JWT_SECRET": self._jwt_secret,
            "AIRFLOW__API__SECRET_KEY": self._jwt_secret,
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(self._log_ports[0]),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(self._log_ports[1]),
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__PARALLELISM": "16",
        })
        env.pop("IM1_TEST_SESSION_READY", None)
        return env

    def __post_init__(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self._t0 = time.monotonic()
        self.api_port = free_port()
        self._jwt_secret = secrets.token_urlsafe(32)
        self._log_ports = (free_port(), free_port())

    def run(self, *args: str, timeout: float = 300) -> str:
        res = subprocess.run([airflow_bin(), *args], env=self.env(), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, timeout=timeout, cwd=str(self.home))
        if res.returncode != 0:
            raise RuntimeError(f"airflow {' '.join(args)} failed (exit {res.returncode}):\n{res.stdout[-3000:]}")
        return res.stdout

    def create_database(self) -> None:
        with psycopg.connect(self._url("postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("create database {}").format(sql.Identifier(self.database)))
        self.run("db", "migrate")

    def drop_database(self) -> None:
        with psycopg.connect(self._url("postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(self.database)))

    # -- processes ------------------------------------------------------------------------------
    def log(self, name: str) -> Path:
        return self.home / f"{name}.log"

    def start(self, name: str, *args: str) -> None:
        out = open(self.log(name), "ab")
        self.procs[name] = subprocess.Popen([airflow_bin(), *args], env=self.env(), stdout=out,
                                            stderr=subprocess.STDOUT, cwd=str(self.home),
                                            start_new_session=True)
        out.close()

    def start_all(self) -> None:
        self.start("api-server", "api-server", "--host", "127.0.0.1", "--port", str(self.api_port),
                   "--workers", "1")
        self.start("scheduler", "scheduler")
        self.start("dag-processor", "dag-processor")
        self.start("triggerer", "triggerer")
        self.start("celery-worker", "celery", "worker", "--queues", self.queue, "--concurrency", "8")
        self.wait_api()

    def check_alive(self) -> None:
        for name, p in self.procs.items():
            if p.poll() is not None:
                raise RuntimeError(f"{name} exited (code {p.returncode}):\n{self.tail(name)}")

    def wait_api(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.api_port}/api/v2/monitor/health"
        while time.monotonic() < deadline:
            self.check_alive()
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(url, timeout=2) as resp:
                    if resp.status == 200:
                        return
            time.sleep(0.5)
        raise TimeoutError(f"the API server did not answer on {url} within {timeout}s:\n{self.tail('api-server')}")

    def health(self) -> dict:
        url = f"http://127.0.0.1:{self.api_port}/api/v2/monitor/health"
        with urllib.request.urlopen(url, timeout=5) as resp:
            return json.loads(resp.read())

    def tail(self, name: str, lines: int = 40) -> str:
        p = self.log(name)
        if not p.exists():
            return f"({p} does not exist)"
        return "\n".join(p.read_text(errors="replace").splitlines()[-lines:])

    def tails(self) -> str:
        return "\n".join(f"--- {n} ---\n{self.tail(n, 25)}" for n in self.procs)

    def stop(self) -> None:
        """SIGTERM every process group, then SIGKILL whatever is left; reap them all."""
        for p in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for p in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
        for p in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)  # stragglers in the group (task subprocesses, pool children)
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=10)

    def forget_queue(self) -> None:
        """Remove this test's queue and kombu's bindings for it (every key naming the queue) from Redis."""
        import redis

        client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=redis_db(), socket_timeout=5)
        try:
            keys = list(client.scan_iter(match=f"*{self.queue}*"))
            if keys:
                client.delete(*keys)
        finally:
            client.close()

    # -- metadata -------------------------------------------------------------------------------
    def query(self, q: str, *args) -> list[tuple]:
        with psycopg.connect(self.metadata_url) as conn:
            return conn.execute(q, args).fetchall()

    def dag_runs(self, dag_id: str) -> list[tuple]:
        return self.query("select run_id, run_type, state from dag_run where dag_id = %s order by id", dag_id)

    def task_states(self, dag_id: str) -> dict[str, str]:
        rows = self.query("select task_id, map_index, state from task_instance where dag_id = %s", dag_id)
        return {(t if m < 0 else f"{t}[{m}]"): s for t, m, s in rows}

    def wait_for_run(self, dag_id: str, *, run_type: str, timeout: float) -> tuple:
        """Wait until ``dag_id`` has a finished run of ``run_type``; returns (run_id, run_type, state)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            done = [r for r in self.dag_runs(dag_id) if r[1] == run_type and r[2] in ("success", "failed")]
            if done:
                self.timings[f"{dag_id} {run_type} run finished"] = time.monotonic() - self._t0
                return done[0]
            time.sleep(2)
        raise TimeoutError(
            f"no finished {run_type} run of {dag_id} within {timeout:.0f}s; runs: {self.dag_runs(dag_id)}; "
            f"tasks: {self.task_states(dag_id)}\n{self.tails()}"
        )


@contextlib.contextmanager
def running_cluster(home: Path, admin_url: str, base_env: dict[str, str], *,
                    pools: dict[str, int] | None = None) -> Iterator[Cluster]:
    """A migrated metadata database (with ``pools``), then every component; all torn down afterwards."""
    cluster = Cluster(home=home, admin_url=admin_url, base_env=base_env)
    t0 = time.monotonic()
    cluster.create_database()
    cluster.timings["metadata database migrated"] = time.monotonic() - t0
    try:
        for name, slots in (pools or {}).items():
            cluster.run("pools", "set", name, str(slots), f"Connections to {name} (im1)")
        cluster.start_all()
        cluster.timings["components up (API answering)"] = time.monotonic() - t0
        yield cluster
    finally:
        cluster.stop()
        cluster.forget_queue()
        cluster.drop_database()
