"""The loader's advisory locks are waited for with an end: a real second connection holding the
feed/organisation (or delivery) lock makes the load fail with a message naming the feed and the
holder, and the batch's ledger row is left as it was, so Airflow's retry loads it once the lock is free.

Old behaviour is detected without timing anything: a loader that waits on the server for the lock
shows up in ``pg_locks`` as not granted.
"""

from __future__ import annotations

import threading

import psycopg
import pytest

from im1.ingest.pipeline import LockWaitTimeout, Pipeline
from im1.transport.sftp import SftpClient
from tests.ingest.conftest import batches, events, raw_count

ODS = "Z91151"


@pytest.fixture()
def holder(warehouse):
    """Another session (as the loader, like a second Airflow worker) that takes advisory locks."""
    with psycopg.connect(warehouse.role_url("loader"), autocommit=True, application_name="im1-test-holder") as c:
        yield c


def _run_beside(conn: psycopg.Connection, key: str, step):
    """Run ``step`` in a thread until it ends; if it blocks on the server waiting for the advisory
    lock ``key`` instead, let it through and fail: the wait had no end."""
    out: dict = {}

    def run():
        try:
            out["result"] = step()
        except Exception as err:
            out["error"] = err

    t = threading.Thread(target=run, daemon=True)
    t.start()
    while t.is_alive():
        waiting = conn.execute(
            """select count(*) from pg_locks l, (select hashtext(%s)::bigint as k) h
                where l.locktype = 'advisory' and not l.granted and l.objid = (h.k & 4294967295)::oid""",
            (key,)).fetchone()[0]
        if waiting:
            conn.execute("select pg_advisory_unlock_all()")
            t.join()
            pytest.fail(f"the loader waited on the server for {key} with no end")
        t.join(0.02)
    return out


def test_a_load_whose_lock_is_held_fails_naming_the_feed_and_the_holder_then_loads(site, loader, holder):
    world = site.world([ODS])
    site.publish(world, 0)
    feed = site.feed("emis_lock_held", [ODS])
    pipe = Pipeline(feed, site.loader_url, key=site.pgp, lock_wait=0.5)
    with SftpClient(site.sftp_settings()) as c:
        fetched = pipe.fetch(c, pipe.discover(c).ready[0])
    key = f"im1.load:{feed.id}:{ODS}"
    holder.execute("select pg_advisory_lock(hashtext(%s))", (key,))
    pid = holder.info.backend_pid
    out = _run_beside(holder, key, lambda: pipe.load(ODS, fetched))
    err = out.get("error")
    assert isinstance(err, LockWaitTimeout), out
    text = str(err)
    assert feed.id in text and ODS in text and f"pid {pid}" in text and "im1-test-holder" in text
    # nothing was touched: the batch is still fetched (not failed), nothing in raw; the operator sees why
    assert [b[2] for b in batches(loader, feed.id)] == ["fetched"]
    assert raw_count(loader, "admin_patient", feed.id) == 0
    assert any("could not take the lock" in e and f"pid {pid}" in e for e in events(loader, feed.id))
    # the holder lets go: the retry loads the batch
    holder.execute("select pg_advisory_unlock(hashtext(%s))", (key,))
    assert pipe.load(ODS, fetched).status == "loaded"
    assert raw_count(loader, "admin_patient", feed.id) > 0


def test_a_held_delivery_stage_lock_fails_the_stage_with_the_holder(site, loader, holder):
    orgs = ["Z91152", "Z91153"]
    site.publish(site.world(orgs), 0)
    feed = site.feed("emis_lock_stage", orgs, extract="multi_organisation")
    pipe = Pipeline(feed, site.loader_url, key=site.pgp, lock_wait=0.5)
    with SftpClient(site.sftp_settings()) as c:
        fetched = pipe.fetch(c, pipe.discover(c).ready[0])
    key = f"im1.stage:{fetched.batch_ids['*']}"
    holder.execute("select pg_advisory_lock(hashtext(%s))", (key,))
    out = _run_beside(holder, key, lambda: pipe.stage(fetched))
    err = out.get("error")
    assert isinstance(err, LockWaitTimeout), out
    assert feed.id in str(err) and fetched.batch_key in str(err) and "im1-test-holder" in str(err)
    assert {b[2] for b in batches(loader, feed.id)} == {"fetched"}
    holder.execute("select pg_advisory_unlock(hashtext(%s))", (key,))
    assert [pipe.load(o, fetched).status for o in orgs] == ["loaded", "loaded"]
