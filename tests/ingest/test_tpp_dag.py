"""The TPP feed's ingest DAG end to end with ``dag.test()``: a gateway folder -> sensor -> fetch ->
load -> GX quality, publishing the feed-and-organisation Asset; then a batch whose manifest names a
file that never arrives waits, and fails at its deadline naming the file."""

from __future__ import annotations

import pendulum

from tests.ingest.conftest import events, ingest_dag, tpp_count
from tests.ingest.test_multi_org import _asset_events
from tests.ingest.test_tpp_ingest import file_rows, tpp_batches

ODS = "Z93201"


def _states(run) -> dict[str, str]:
    return {(ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"): ti.state
            for ti in run.get_task_instances()}


def test_tpp_dag_loads_a_bulk_then_waits_for_an_incomplete_batch_and_fails_at_the_deadline(gateway, loader,
                                                                                          monkeypatch):
    world = gateway.world(ODS, patients=30, days=3)
    bulk = gateway.publish(world, 0)
    feed = gateway.feed("tpp_dag", ODS)
    dag = ingest_dag(feed.id)
    assert set(dag.task_dict) == {"discover", "wait_for_batch", "fetch", "organisation.load", "organisation.quality"}

    # the bulk's cut-off is midnight after its data date; the 06:00 run that morning loads it
    run = dag.test(logical_date=pendulum.datetime(2026, 11, 3, 6, tz="Europe/London"))
    assert run.state == "success", _states(run)
    assert tpp_count(loader, "srpatient", feed.id) == file_rows(bulk / "SRPatient.csv") > 0
    assert tpp_batches(loader, feed.id) == [(bulk.name, "loaded", False, tpp_batches(loader, feed.id)[0][3], None)]
    assert loader.execute("select quality_status from ingest.batches where feed_id = %s",
                          (feed.id,)).fetchone()[0] == "passed"
    assert [n for n, _ in _asset_events(dag.dag_id)] == [f"im1_raw__tpp_dag__{ODS}"]

    # the next extract's manifest names SRRota.csv, which never arrives
    delta = gateway.publish(world, 1)
    (delta / "SRRota.csv").unlink()
    monkeypatch.setenv("IM1_BATCH_POKE_SECONDS", "1")
    dag = ingest_dag(feed.id)
    run = dag.test(logical_date=pendulum.datetime(2026, 11, 4, 6, tz="Europe/London"),
                   run_conf={"batch_deadline_hours": 3 / 3600})  # 3 seconds
    assert run.state == "failed"
    states = _states(run)
    assert states["wait_for_batch"] == "failed" and states["fetch"] == "upstream_failed"
    [first, (key, status, _, _, error)] = tpp_batches(loader, feed.id)
    assert first[1] == "loaded" and key == delta.name and status == "quarantined"
    assert "SRRota.csv named in SRManifest.csv still missing" in error
    assert any("quarantined: incomplete batch" in e for e in events(loader, feed.id))
    assert len(_asset_events(dag.dag_id)) == 1  # nothing new published
