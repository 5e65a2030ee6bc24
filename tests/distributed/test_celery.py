"""The distributed path, end to end: CeleryExecutor with a Redis broker (opt-in: needs Redis on loopback).

The API server, scheduler, DAG processor, triggerer and a Celery worker run as separate processes
(as the Compose stack runs them as separate services) over their own PostgreSQL metadata database.
A synthetic EMIS delivery waits on the real SFTP server; the scheduler starts the feed's ingest
DAG by its own timetable, the worker fetches, decrypts, loads and checks it, the raw Asset event
triggers the dbt transform DAG, and the mart read as the BI role equals the synthetic ground truth.

Runs only where a Redis server answers PING on 127.0.0.1:6379 (skipped otherwise, with the
reason). It uses Redis database ``IM1_TEST_REDIS_DB`` (default 11) and a queue of its own.
"""

from __future__ import annotations

import os

import psycopg
import pytest

from im1.warehouse import MART_READER
from im1dev.synth import truth
from tests.distributed.cluster import redis_unavailable_reason, running_cluster
from tests.ingest.conftest import START, Site, raw_count

# Opt-in (IM1_TEST_CELERY=1, and a Redis server): five Airflow services and ~124 task processes take
# four to six minutes of both cores, which `make test` cannot afford within its 15-minute budget on
# two cores; run it with `IM1_TEST_CELERY=1 make test PYTEST_ARGS="tests/distributed"`.
_why_not = (None if os.environ.get("IM1_TEST_CELERY") == "1" else "opt-in: set IM1_TEST_CELERY=1") \
    or redis_unavailable_reason()
pytestmark = [
    pytest.mark.redis,
    pytest.mark.e2e,
    pytest.mark.skipif(_why_not is not None, reason=f"distributed (Celery) test skipped: {_why_not}"),
    pytest.mark.timeout(1200),
]

ODS = "Z91388"  # unique among the tests: the session warehouse is shared by every test of a worker
FEED = "emis_celery"
# generous for 2 shared cores; the waits end as soon as the runs finish
INGEST_TIMEOUT = float(os.environ.get("IM1_CELERY_INGEST_TIMEOUT", "300"))
TRANSFORM_TIMEOUT = float(os.environ.get("IM1_CELERY_TRANSFORM_TIMEOUT", "600"))


@pytest.fixture()
def site(sftp_server, pgp_keys, ssh_keys, tmp_path, monkeypatch, warehouse):
    from im1.warehouse import LOADER

    return Site(sftp_server, pgp_keys, ssh_keys, tmp_path, monkeypatch, "C3130000-AAAA-4BBB-8CCC-0000000C3130",
                warehouse.role_url(LOADER))


def test_ingest_and_transform_through_scheduler_and_celery_worker(site, warehouse, db, tmp_path):
    world = site.world([ODS], patients=60)
    site.publish(world, 0)  # a complete bulk, extracted on START at 02:00
    # catchup is off: once the DAG processor has parsed the feed, the scheduler starts the run of the
    # latest data interval by itself, which covers the (earlier) extract
    feed = site.feed(FEED, [ODS], retries=1)
    # the transform DAG narrowed to the one mart this test reads (and what it is built from): the
    # claim is the distributed path (asset trigger, Celery queue, worker), not every model again,
    # which the end-to-end test builds; ~95 watcher processes on 2 cores took ten minutes
    env = {**os.environ, "IM1_TRANSFORM_SELECT": "+mart_list_size"}
    with running_cluster(tmp_path / "airflow", warehouse.admin_url, env, pools={feed.pool: 4}) as af:
        run_id, run_type, state = af.wait_for_run(feed.dag_id, run_type="scheduled", timeout=INGEST_TIMEOUT)
        tasks = af.task_states(feed.dag_id)
        assert state == "success", f"{feed.dag_id} {run_id}: {tasks}\n{af.tails()}"
        assert tasks == {"discover": "success", "wait_for_batch": "success", "fetch": "success",
                         "organisation.load[0]": "success", "organisation.quality[0]": "success"}

        # the ingest published the feed's raw Asset: the transform DAG runs because of it
        t_run, t_type, t_state = af.wait_for_run("im1_transform", run_type="asset_triggered",
                                                 timeout=TRANSFORM_TIMEOUT)
        t_tasks = af.task_states("im1_transform")
        assert t_state == "success", f"im1_transform {t_run}: {t_tasks}\n{af.tails()}"
        assert t_tasks and all(s in ("success", "skipped") for s in t_tasks.values()), t_tasks

        # every task went through the Celery queue of this test and was executed by the worker
        queues = af.query("select distinct queue from task_instance where dag_id in (%s, %s)",
                          feed.dag_id, "im1_transform")
        assert queues == [(af.queue,)]
        hosts = af.query("select count(*) from task_instance where dag_id = %s and hostname is null",
                         feed.dag_id)
        assert hosts == [(0,)]
        worker_log = af.log("celery-worker").read_text(errors="replace")
        assert feed.dag_id in worker_log and "im1_transform" in worker_log
        assert af.health()["metadatabase"]["status"] == "healthy"
        print("timings (s):", {k: round(v, 1) for k, v in af.timings.items()})

    patients = sum(1 for p in world.patients if p.reg_date <= START)
    assert raw_count(db, "admin_patient", FEED) == patients
    [(status, rows)] = db.execute("select status, rows_loaded from ingest.batches where feed_id = %s",
                                  (FEED,)).fetchall()
    assert status == "loaded" and rows > patients
    with psycopg.connect(warehouse.role_url(MART_READER)) as bi:
        rows = bi.execute("select snapshot_date, sex, age_band, patients from marts.mart_list_size "
                          "where practice_code = %s", (ODS,)).fetchall()
    assert rows, "the mart has no rows for the practice"
    # every first-of-month snapshot equals the ground truth of the extract
    snapshots = sorted({r[0] for r in rows})
    assert snapshots == truth.snapshot_dates(world.start)
    for snapshot in snapshots:
        got = {(r[1], r[2]): r[3] for r in rows if r[0] == snapshot}
        want = {(e["sex"], e["age_band"]): e["patients"]
                for e in truth.list_size(world, snapshot, as_of=world.start)}
        assert got == want, snapshot
