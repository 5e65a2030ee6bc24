"""The DAG folder imports cleanly, with a DAG for every configured feed; parsing does no heavy work
(how long it takes at ICB scale is ``make bench-parse``, not a test)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit  # no service: `make test-unit` runs it

ROOT = Path(__file__).resolve().parents[2]
DAGS = ROOT / "dags"

PARSE = textwrap.dedent("""
    import json, time
    from airflow.dag_processing.dagbag import DagBag  # the DAG processor has Airflow imported already
    t0 = time.monotonic()
    bag = DagBag(dag_folder=%r)
    elapsed = time.monotonic() - t0
    out = {"errors": {k: str(v)[-500:] for k, v in bag.import_errors.items()}, "seconds": elapsed, "dags": {}}
    for dag_id, dag in bag.dags.items():
        out["dags"][dag_id] = {
            "tags": sorted(dag.tags),
            "tasks": {t.task_id: {"retries": t.retries, "pool": t.pool, "backoff": t.retry_exponential_backoff,
                                  "max_retry_delay": str(t.max_retry_delay)} for t in dag.tasks},
            "timetable": type(dag.timetable).__name__,
            "catchup": dag.catchup,
        }
    print("RESULT" + json.dumps(out))
""")


def parse_dag_folder(feeds_file: Path | None = None) -> dict:
    """Parse the whole DAG folder in a fresh interpreter (as the DAG processor does)."""
    env = dict(os.environ)
    if feeds_file:
        env["IM1_FEEDS_FILE"] = str(feeds_file)
    res = subprocess.run([sys.executable, "-c", PARSE % str(DAGS)], env=env, capture_output=True, text=True,
                         timeout=120)
    line = next((ln for ln in res.stdout.splitlines() if ln.startswith("RESULT")), None)
    assert line, f"DAG parse crashed:\n{res.stdout[-2000:]}\n{res.stderr[-4000:]}"
    return json.loads(line[len("RESULT"):])


@pytest.fixture(scope="module")
def parsed() -> dict:
    return parse_dag_folder()


def test_no_import_errors(parsed):
    assert parsed["errors"] == {}


HEAVY = ("psycopg", "paramiko", "gnupg", "great_expectations", "dbt", "cosmos", "pandas")

IMPORTS = textwrap.dedent("""
    import runpy, sys
    before = set(sys.modules)
    runpy.run_path(%r)
    print("RESULT" + " ".join(sorted(m for m in set(sys.modules) - before)))
""")


def test_the_ingest_dag_file_imports_nothing_heavy():
    """Parsing builds the DAGs from the config alone: the transport, crypto, database and quality
    libraries are imported when a task runs."""
    res = subprocess.run([sys.executable, "-c", "import airflow.sdk\n" + IMPORTS % str(DAGS / "im1_ingest.py")],
                         capture_output=True, text=True, timeout=120)
    line = next((ln for ln in res.stdout.splitlines() if ln.startswith("RESULT")), None)
    assert line, res.stderr[-3000:]
    loaded = {m.split(".")[0] for m in line[len("RESULT"):].split()}
    assert loaded.isdisjoint(HEAVY), sorted(loaded & set(HEAVY))


def test_the_transform_schedule_does_not_grow_with_the_feeds(parsed):
    """One alias for every feed's raw Assets: the transform DAG is the same for 1 or 1,000 feeds."""
    from im1.airflow.transform import build_transform_dag

    dag = build_transform_dag()
    assert [type(a).__name__ for a in dag.schedule] == ["AssetAlias"] and dag.schedule[0].name == "im1_raw"


def test_a_dag_for_every_configured_feed_plus_transform_and_release(parsed):
    from im1.config import load_config

    expected = {f.dag_id for f in load_config().enabled_feeds} | {"im1_transform", "im1_release"}
    assert set(parsed["dags"]) == expected


def test_every_task_retries_with_exponential_backoff_and_is_tagged(parsed):
    for dag_id, d in parsed["dags"].items():
        assert "im1" in d["tags"], dag_id
        for task_id, t in d["tasks"].items():
            assert t["retries"] >= 1, f"{dag_id}.{task_id} has no retries"
            assert t["backoff"] == 2.0, f"{dag_id}.{task_id}: exponential back-off must be a 2.0 multiplier"
            assert t["max_retry_delay"] != "None", f"{dag_id}.{task_id} has no max retry delay"


def test_ingest_dags_are_daily_data_interval_and_pooled(parsed):
    from im1.config import load_config

    for f in load_config().enabled_feeds:
        d = parsed["dags"][f.dag_id]
        assert d["timetable"] == "CronDataIntervalTimetable"
        assert d["catchup"] is f.catchup
        assert {t["pool"] for t in d["tasks"].values()} == {f.pool}


def test_multi_feed_config_gives_one_dag_per_feed(tmp_path):
    feeds = tmp_path / "feeds.yaml"
    entries = []
    for i, ods in enumerate(["A81001", "A81002", "B82003"]):
        entries.append(textwrap.dedent(f"""
          - id: emis_{ods.lower()}
            supplier: emis
            transport: {{kind: sftp, host: sftp{i}.example, port: 22, path: /IM1/sftp/x, conn_id: sftp_{i}}}
            pgp_conn_id: pgp_{i}
            sharing_agreement_guid: 45E7CD20-EE37-41AB-90D6-DC9D4B03D10{i}
            organisations: [{{ods_code: {ods}, supplier_org_id: "{{D77C65E1-E100-4272-9386-F4FC383D875{i}}}"}}]
        """))
    feeds.write_text("version: 1\nfeeds:" + "".join(textwrap.indent(e, "") for e in entries))
    parsed = parse_dag_folder(feeds)
    assert parsed["errors"] == {}
    assert set(parsed["dags"]) == {"im1_ingest__emis_a81001", "im1_ingest__emis_a81002",
                                   "im1_ingest__emis_b82003", "im1_transform", "im1_release"}


def test_an_invalid_config_is_an_import_error_naming_the_field(tmp_path):
    feeds = tmp_path / "feeds.yaml"
    feeds.write_text("version: 1\nfeeds:\n  - id: Bad-Id\n    supplier: emis\n")
    parsed = parse_dag_folder(feeds)
    assert parsed["errors"], "an invalid feed file must surface as a DAG import error"
    assert any("feeds[0].id" in e for e in parsed["errors"].values())


def test_ingest_dag_shape_for_each_extract_type():
    from im1.airflow.ingest import build_ingest_dag
    from im1.config import parse_config

    def feed(extract: str, n: int):
        return parse_config({"version": 1, "feeds": [{
            "id": f"emis_{extract}", "supplier": "emis", "extract": extract, "batch_deadline_hours": 4,
            "transport": {"kind": "sftp", "host": "h", "path": "/IM1", "conn_id": "c"}, "pgp_conn_id": "p",
            "sharing_agreement_guid": "45E7CD20-EE37-41AB-90D6-DC9D4B03D102",
            "organisations": [{"ods_code": f"A8100{i}", "supplier_org_id": f"{{D77C65E1-E100-4272-9386-F4FC383D875{i}}}"}
                              for i in range(n)]}]}).feeds[0]

    single = build_ingest_dag(feed("organisation", 1))
    assert set(single.task_dict) == {"discover", "wait_for_batch", "fetch", "organisation.load",
                                     "organisation.quality"}
    sensor = single.task_dict["wait_for_batch"]
    assert sensor.mode == "reschedule" and "up to 4.0 h" in single.doc_md
    from airflow.sdk.exceptions import AirflowFailException

    from im1.airflow.ingest import run_deadline_hours

    assert run_deadline_hours(feed("organisation", 1), None) == 4
    assert run_deadline_hours(feed("organisation", 1), {"batch_deadline_hours": "0.5"}) == 0.5
    for bad in ("soon", -1, float("nan")):
        with pytest.raises(AirflowFailException, match="batch_deadline_hours"):
            run_deadline_hours(feed("organisation", 1), {"batch_deadline_hours": bad})
    multi = build_ingest_dag(feed("multi_organisation", 3))
    assert set(multi.task_dict) == {"discover", "wait_for_batch", "fetch", "stage", "organisation.load",
                                    "organisation.quality", "cleanup"}
    assert multi.task_dict["stage"].is_setup and multi.task_dict["cleanup"].is_teardown
    assert multi.task_dict["organisation.load"].upstream_task_ids >= {"stage", "fetch"}
    # the quality task publishes through an alias (assets chosen at run time, per organisation)
    outlets = multi.task_dict["organisation.quality"].outlets
    assert [type(o).__name__ for o in outlets] == ["AssetAlias"] and outlets[0].name == "im1_raw"


def test_tpp_feed_dag_shape():
    from im1.airflow.ingest import build_ingest_dag
    from im1.config import parse_config

    feed = parse_config({"version": 1, "feeds": [{
        "id": "tpp_b82001", "supplier": "tpp", "transport": {"kind": "folder", "path": "/srv/tpp/B82001"},
        "organisations": [{"ods_code": "B82001"}]}]}).feeds[0]
    dag = build_ingest_dag(feed)
    assert set(dag.task_dict) == {"discover", "wait_for_batch", "fetch", "organisation.load", "organisation.quality"}
    assert dag.task_dict["wait_for_batch"].mode == "reschedule"
    assert [o.name for o in dag.task_dict["organisation.quality"].outlets] == ["im1_raw"]
    assert "SRManifest.csv" in dag.doc_md and "Windows-1252" in dag.doc_md
