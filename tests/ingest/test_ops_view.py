"""The operator view in the Airflow UI (``/im1/ops``, ``/im1/ops.json``): real PostgreSQL, ledger rows
made by actually ingesting synthetic deliveries (one loaded, then one quarantined), read back
through the FastAPI app the Airflow API server mounts."""

from __future__ import annotations

import textwrap

import pytest
from fastapi.testclient import TestClient

from im1dev.synth import faults
from tests.ingest.conftest import run_core

ODS = "Z91301"
NEW_ODS = "Z91399"


@pytest.fixture()
def ops_app():
    from im1.airflow import ui

    app = ui.create_app()
    yield app


def signed_in(app) -> TestClient:
    """A client past Airflow's login check (the check itself is tested below)."""
    from im1.airflow import ui

    app.dependency_overrides[ui.authenticated] = lambda: None
    return TestClient(app)


def test_ops_view_shows_latest_batch_status_rows_error_and_freshness(site, loader, ops_app, monkeypatch):
    world = site.world([ODS])
    site.publish(world, 0)
    feed = site.feed("emis_ops_view", [ODS])
    [ok] = run_core(site, feed)
    assert ok.status == "loaded"
    folder = site.publish(world, 1)
    faults.truncate(folder, "Admin_Patient", keep=0.5)
    [bad] = run_core(site, feed)
    assert "truncated" in str(bad)
    # a second feed, configured but not delivered yet, is listed too
    feeds_file = site.tmp / "feeds_ops.yaml"
    feeds_file.write_text(open(site.tmp / f"feeds_{feed.id}.yaml").read() + textwrap.indent(textwrap.dedent(f"""
        - id: emis_ops_new
          supplier: emis
          transport: {{kind: sftp, host: 127.0.0.1, port: 22, path: /IM1/sftp/none, conn_id: t_sftp}}
          pgp_conn_id: t_pgp
          sharing_agreement_guid: 0000000A-AAAA-4BBB-8CCC-00000000000A
          organisations: [{{ods_code: {NEW_ODS}, supplier_org_id: "{{0000000A-1111-4222-8333-00000000000A}}"}}]
    """), "  "))
    monkeypatch.setenv("IM1_FEEDS_FILE", str(feeds_file))
    ledger = {r[0]: r for r in loader.execute(
        "select batch_key, batch_id, status, rows_loaded, error, extract_ts, loaded_at from ingest.batches "
        "where feed_id = %s", (feed.id,))}
    good_key, bad_key = sorted(ledger)
    client = signed_in(ops_app)

    res = client.get("/ops.json")
    assert res.status_code == 200, res.text
    rows = {(r["feed_id"], r["organisation"]): r for r in res.json()["rows"]}
    r = rows[(feed.id, ODS)]
    assert r["batch_id"] == ledger[bad_key][1] and r["batch_key"] == bad_key
    assert r["status"] == "quarantined" and r["rows_loaded"] is None
    assert "Admin_Patient" in r["error"] and "truncated" in r["error"]
    assert r["extract_ts"].startswith("2026-11-03T02:00")
    # freshness comes from the newest *loaded* batch (the day before)
    assert r["last_extract"].startswith("2026-11-02T02:00")
    assert r["last_loaded_at"][:19] == ledger[good_key][6].isoformat()[:19]
    assert r["age_hours"] > 0
    assert (r["loaded"], r["quarantined"], r["pending"]) == (1, 1, 0)
    assert "quarantined" in r["attention"]
    new = rows[("emis_ops_new", NEW_ODS)]
    assert new["batch_id"] is None and new["status"] is None and new["attention"] == "no delivery yet"

    # filtered by feed, as HTML: the same facts an operator reads
    page = client.get("/ops", params={"feed": feed.id})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    assert f"{ledger[bad_key][1]} {bad_key}" in html and "quarantined" in html and "truncated" in html
    assert ODS in html and "emis_ops_new" not in html
    # the loaded batch's rows show when it is the latest one
    res = client.get("/ops.json", params={"feed": feed.id}).json()
    assert [r["organisation"] for r in res["rows"]] == [ODS]


def test_ops_view_reads_with_a_read_only_session():
    from im1.airflow import ui

    with ui.read_only(ui.ops_conninfo()) as conn:
        assert conn.execute("show transaction_read_only").fetchone()[0] == "on"
        import psycopg

        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("delete from ingest.events where false")


def test_ops_view_and_gx_docs_need_an_airflow_login(ops_app):
    client = TestClient(ops_app)
    for path in ("/ops", "/ops.json", "/gx/index.html"):
        assert client.get(path).status_code == 401, path


def test_gx_docs_are_served_without_leaving_the_site(ops_app, state_dir):
    from im1.ingest.quality import data_docs_index

    site_dir = data_docs_index().parent
    site_dir.mkdir(parents=True, exist_ok=True)
    created = not (site_dir / "index.html").exists()
    if created:
        (site_dir / "index.html").write_text("<html>GX Data Docs</html>")
    (state_dir / "secret.txt").write_text("not for the web")
    client = signed_in(ops_app)
    res = client.get("/gx/index.html")
    assert res.status_code == 200 and "<html" in res.text
    assert client.get("/gx/").status_code == 200
    assert client.get("/gx/../../../../secret.txt").status_code == 404
    assert client.get("/gx/%2e%2e/%2e%2e/%2e%2e/%2e%2e/secret.txt").status_code == 404
    if created:
        (site_dir / "index.html").unlink()
