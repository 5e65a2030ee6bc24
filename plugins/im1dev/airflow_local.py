"""``make airflow``: a local Airflow (API server + UI, scheduler, DAG processor, triggerer) over
the same embedded warehouse and Airflow metadata database the demo used, so its runs are visible.

The demo's SFTP supplier is served too (when the demo has been run), so DAGs triggered from the
UI can fetch. Ctrl-C stops Airflow, the SFTP server and the embedded PostgreSQL cleanly.
"""

from __future__ import annotations

import os
import signal
import subprocess

from im1.config import load_config
from im1.warehouse.bootstrap import bootstrap, ensure_database
from im1dev import demo, runtime


def run_local_airflow(port: int = 8080) -> int:
    cfg = load_config()
    with runtime.warehouse_up() as wh:
        bootstrap(wh)
        ensure_database(wh, "airflow")
        env = runtime.local_env(wh)
        env["AIRFLOW__API__PORT"] = str(port)
        env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] = f"http://localhost:{port}/execution/"
        demo.prepare_airflow(env, cfg)
        demo.ensure_manifest(env)
        sftp = None
        feeds = demo.demo_feeds(cfg)
        if feeds and (demo.demo_dir() / "keys" / "pgp_secret.asc").exists():
            keys = demo.ensure_keys()
            demo.write_connections(feeds, keys)
            sftp = demo.start_sftp_server(feeds[0], keys, env)
        print(f"\nAirflow UI: http://localhost:{port}  (local mode: no login needed). Ctrl-C to stop.\n", flush=True)
        proc = subprocess.Popen(runtime.airflow_cmd("standalone"), env=env, start_new_session=True)

        def _forward(signum, _frame):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)

        old_int = signal.signal(signal.SIGINT, _forward)
        old_term = signal.signal(signal.SIGTERM, _forward)
        try:
            rc = proc.wait()
        finally:
            signal.signal(signal.SIGINT, old_int)
            signal.signal(signal.SIGTERM, old_term)
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # any straggler in the group
            except ProcessLookupError:
                pass
            if sftp is not None:
                sftp.terminate()
                sftp.wait(timeout=10)
    return 0 if rc in (0, -signal.SIGTERM, 143) else rc
