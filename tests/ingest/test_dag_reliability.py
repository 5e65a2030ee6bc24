"""Reliability through the real ingest DAG (``dag.test()``): an incomplete batch waits, then fails at
its deadline with an alert naming the missing tables; a connection dropped mid-download is
retried and resumes; the im1_release DAG re-queues a quarantined batch."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pendulum
import pytest

from im1 import paths
from im1dev.synth import faults
from tests.ingest.conftest import START, batches, events, ingest_dag, raw_count

ODS = "Z91201"
LOGICAL = pendulum.datetime(2026, 11, 2, 6, tz="Europe/London")


@pytest.fixture()
def alerts(monkeypatch):
    """A webhook on loopback collecting the failure alerts (IM1_ALERT_WEBHOOK_URL)."""
    received: list[str] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"])))["text"])
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    srv = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    monkeypatch.setenv("IM1_ALERT_WEBHOOK_URL", f"http://127.0.0.1:{srv.server_port}/alert")
    yield received
    srv.shutdown()


def _ti_states(run) -> dict[str, str]:
    return {(ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"): ti.state
            for ti in run.get_task_instances()}


def _patients(world) -> int:
    return sum(1 for p in world.patients if p.reg_date <= START)


def test_missing_table_waits_then_fails_at_the_deadline_and_release_loads_it(site, loader, alerts, monkeypatch):
    from airflow.models.taskreschedule import TaskReschedule
    from airflow.utils.session import create_session

    world = site.world([ODS])
    folder = site.publish(world, 0)
    missing = faults.remove_table(folder, "CareRecord_Observation")
    monkeypatch.setenv("IM1_BATCH_POKE_SECONDS", "1")
    feed = site.feed("emis_missing_table", [ODS], retries=1)
    dag = ingest_dag(feed.id)
    run = dag.test(logical_date=LOGICAL, run_conf={"batch_deadline_hours": 3 / 3600})  # 3 seconds
    assert run.state == "failed"
    states = _ti_states(run)
    assert states["discover"] == "success" and states["wait_for_batch"] == "failed"
    assert states["fetch"] == "upstream_failed"
    with create_session() as s:
        pokes = s.query(TaskReschedule).filter(TaskReschedule.ti_id.in_(
            [ti.id for ti in run.get_task_instances() if ti.task_id == "wait_for_batch"])).count()
    assert pokes >= 2, "the sensor should have waited (rescheduled) before giving up"
    # a clear alert naming the missing table
    [alert] = [a for a in alerts if "wait_for_batch" in a]
    assert "CareRecord_Observation" in alert and "bulk_000001@20261102020000" in alert and "incomplete" in alert
    [(org, key, status, rows, late, error)] = batches(loader, feed.id)
    assert status == "quarantined" and "CareRecord_Observation" in error
    assert raw_count(loader, "admin_patient", feed.id) == 0
    # the next run does not wait for it again: nothing new (skipped), no second alert
    run = dag.test(logical_date=LOGICAL)
    assert run.state == "success" and _ti_states(run)["discover"] == "skipped"
    # the supplier delivers the missing file; an operator releases the batch through the im1_release DAG
    site.publish(world, 0)
    assert missing.files[0].exists()
    from airflow.dag_processing.dagbag import DagBag


    release = DagBag(dag_folder=str(paths.dags_dir() / "im1_release.py")).get_dag("im1_release")
    batch_id = loader.execute("select batch_id from ingest.batches where feed_id = %s", (feed.id,)).fetchone()[0]
    run = release.test(run_conf={"batch_id": batch_id, "reason": "observation file delivered"})
    assert run.state == "success"
    assert batches(loader, feed.id)[0][2] == "released"
    run = dag.test(logical_date=LOGICAL)
    assert run.state == "success"
    assert raw_count(loader, "admin_patient", feed.id) == _patients(world)
    [(org, key, status, rows, late, error)] = batches(loader, feed.id)
    assert status == "loaded" and error is None
    assert any("released (observation file delivered)" in e for e in events(loader, feed.id))


def test_connection_dropped_mid_download_is_retried_and_loads_once(site, loader, alerts):
    world = site.world([ODS], patients=8000)
    folder = site.publish(world, 0)
    big = faults.table_file(folder, "Admin_Patient")
    size = big.stat().st_size
    assert size > 600_000  # several of the client's 256 KiB reads
    site.server.faults.drop_after_bytes[big.name] = 400_000
    feed = site.feed("emis_dropped", [ODS], retries=2)
    dag = ingest_dag(feed.id)
    run = dag.test(logical_date=LOGICAL)
    assert run.state == "success"
    fetch = next(ti for ti in run.get_task_instances() if ti.task_id == "fetch")
    assert fetch.try_number == 2  # failed once, then succeeded
    assert not site.server.faults.drop_after_bytes  # the fault fired
    assert raw_count(loader, "admin_patient", feed.id) == _patients(world)
    failed = [e for e in events(loader, feed.id) if e.startswith("fetch of")]
    assert len(failed) == 1 and big.name in failed[0] and "resumes the partial download" in failed[0]
    assert batches(loader, feed.id)[0][2] == "loaded"
    assert not alerts  # a retried-and-recovered failure is not an alert
    # the retry asked for the file again (that it resumes from the partial file rather than byte 0
    # is proven where the timing can be controlled: tests/transport/test_sftp.py; under dag.test() on
    # a busy machine the first attempt may have kept nothing before the drop)
    first, retry = site.server.faults.first_reads[big.name]
    assert first == 0 and 0 <= retry < size, site.server.faults.first_reads
