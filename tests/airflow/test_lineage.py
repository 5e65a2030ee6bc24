"""Per-node dbt lineage events built from a build's manifest and run results (pure: no Airflow, no I/O),
and the OpenLineage/docs settings of the local environment."""

from __future__ import annotations

import json

import pytest

from im1.airflow import lineage
from im1dev import runtime

pytestmark = pytest.mark.unit  # no service: `make test-unit` runs it

PG = "postgres://db.example:5432"


def _node(uid, rtype="model", schema="staging", deps=(), materialized="view", columns=None):
    name = uid.rsplit(".", 1)[1]
    return {"unique_id": uid, "resource_type": rtype, "name": name, "alias": name, "database": "im1",
            "schema": schema, "depends_on": {"nodes": list(deps)}, "config": {"materialized": materialized},
            "columns": columns or {}}


MANIFEST = {
    "sources": {"source.im1.emis.admin_patient": {"database": "im1", "schema": "raw_emis", "name": "admin_patient",
                                                  "identifier": "admin_patient"}},
    "nodes": {
        "model.im1.stg_patients": _node("model.im1.stg_patients", deps=["source.im1.emis.admin_patient"]),
        "model.im1.int_active": _node("model.im1.int_active", schema="intermediate", materialized="ephemeral",
                                      deps=["model.im1.stg_patients", "seed.im1.bands"]),
        "seed.im1.bands": _node("seed.im1.bands", rtype="seed", schema="reference"),
        "model.im1.mart_sizes": _node("model.im1.mart_sizes", schema="marts", materialized="table",
                                      deps=["model.im1.int_active"],
                                      columns={"patients": {"name": "patients", "data_type": "bigint",
                                                            "description": "registered patients"}}),
        "model.im1.mart_broken": _node("model.im1.mart_broken", schema="marts", deps=["model.im1.stg_patients"]),
        "model.im1.mart_after_broken": _node("model.im1.mart_after_broken", schema="marts",
                                             deps=["model.im1.mart_broken"]),
        "test.im1.not_null_mart_sizes_patients": _node("test.im1.not_null_mart_sizes_patients", rtype="test",
                                                       deps=["model.im1.mart_sizes"]),
    },
}


def _result(uid, status="success", message=None):
    return {"unique_id": uid, "status": status, "message": message, "compiled_code": f"select 1 /* {uid} */",
            "timing": [{"name": "execute", "started_at": "2026-11-02T06:00:00Z",
                        "completed_at": "2026-11-02T06:00:01.5Z"}]}


RUN_RESULTS = {"results": [
    _result("seed.im1.bands"), _result("model.im1.stg_patients"), _result("model.im1.mart_sizes"),
    _result("test.im1.not_null_mart_sizes_patients", "pass"),
    _result("model.im1.mart_broken", "error", 'relation "im1.staging.gone" does not exist'),
    _result("model.im1.mart_after_broken", "skipped"),
]}

PARENT = {"run_id": "01890000-0000-7000-8000-000000000001", "job_name": "im1_transform.dbt.dbt_producer_watcher",
          "root_run_id": "01890000-0000-7000-8000-000000000002", "root_job_name": "im1_transform"}


@pytest.fixture(scope="module")
def events() -> dict[str, dict]:
    from openlineage.client.serde import Serde

    out = lineage.dbt_node_events(MANIFEST, RUN_RESULTS, dataset_namespace=PG, job_namespace="im1", parent=PARENT)
    return {e["job"]["name"]: e for e in (json.loads(Serde.to_json(ev)) for ev in out)}


def _names(event, side):
    return [(d["namespace"], d["name"]) for d in event[side]]


def test_one_event_per_model_or_seed_that_ran(events):
    assert set(events) == {"dbt.seed.im1.bands", "dbt.model.im1.stg_patients", "dbt.model.im1.mart_sizes",
                           "dbt.model.im1.mart_broken"}  # not tests, not ephemeral models, not skipped nodes


def test_each_model_reads_its_own_parents(events):
    stg = events["dbt.model.im1.stg_patients"]
    assert _names(stg, "inputs") == [(PG, "im1.raw_emis.admin_patient")]
    assert _names(stg, "outputs") == [(PG, "im1.staging.stg_patients")]
    # through the ephemeral model to what it reads
    mart = events["dbt.model.im1.mart_sizes"]
    assert _names(mart, "inputs") == [(PG, "im1.staging.stg_patients"), (PG, "im1.reference.bands")]
    assert _names(mart, "outputs") == [(PG, "im1.marts.mart_sizes")]
    assert mart["outputs"][0]["facets"]["schema"]["fields"] == [
        {"name": "patients", "type": "bigint", "description": "registered patients", "fields": []}]
    assert mart["job"]["facets"]["sql"]["query"].startswith("select 1")
    assert mart["job"]["facets"]["jobType"]["integration"] == "DBT"
    assert mart["eventTime"] == "2026-11-02T06:00:01.5Z"


def test_runs_are_children_of_the_airflow_task_and_failures_carry_the_error(events):
    for e in events.values():
        parent = e["run"]["facets"]["parent"]
        assert parent["run"]["runId"] == PARENT["run_id"] and parent["job"]["name"] == PARENT["job_name"]
        assert parent["root"]["job"]["name"] == "im1_transform"
    broken = events["dbt.model.im1.mart_broken"]
    assert broken["eventType"] == "FAIL"
    assert "does not exist" in broken["run"]["facets"]["errorMessage"]["message"]
    assert events["dbt.model.im1.mart_sizes"]["eventType"] == "COMPLETE"
    assert len({e["run"]["runId"] for e in events.values()}) == len(events)


def test_dataset_uris_for_ingest_lineage():
    assert lineage.raw_table_uri("postgresql://loader:x@db.example:6543/im1", "emis", "CareRecord_Observation") == \
        "postgres://db.example:6543/im1/raw_emis/carerecord_observation"
    assert lineage.delivered_file_uri("sftp.example", 22, "/IM1/sftp/AB/20261102/x y.csv.gpg") == \
        "sftp://sftp.example:22/IM1/sftp/AB/20261102/x%20y.csv.gpg"
    assert lineage.archive_file_uri("/srv/archive/b/f.csv.gpg") == "file:///srv/archive/b/f.csv.gpg"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({}, {"type": "file"}),
        ({"IM1_LINEAGE": "console"}, {"type": "console"}),
        ({"IM1_LINEAGE": "off"}, None),
        ({"OPENLINEAGE_URL": "http://marquez:5000"}, None),
        ({"AIRFLOW__OPENLINEAGE__TRANSPORT": '{"type": "http", "url": "http://x"}'}, None),
    ],
    ids=["default-file", "console", "off", "openlineage-url", "explicit-transport"],
)
def test_lineage_transport_defaults_and_overrides(given, expected, tmp_path, monkeypatch):
    monkeypatch.setenv("IM1_STATE_DIR", str(tmp_path))
    out = runtime.lineage_env(dict(given))
    assert out["AIRFLOW__OPENLINEAGE__NAMESPACE"] == "im1"
    if expected is None:
        assert "AIRFLOW__OPENLINEAGE__TRANSPORT" not in out
        assert ("AIRFLOW__OPENLINEAGE__DISABLED" in out) == (given.get("IM1_LINEAGE") == "off")
    else:
        transport = json.loads(out["AIRFLOW__OPENLINEAGE__TRANSPORT"])
        assert transport["type"] == expected["type"]
        if expected["type"] == "file":
            assert transport["log_file_path"] == str(tmp_path / "lineage" / "event")
            assert (tmp_path / "lineage").is_dir()
    with pytest.raises(ValueError, match="IM1_LINEAGE"):
        runtime.lineage_env({"IM1_LINEAGE": "kafka"})


def test_cosmos_docs_plugin_points_at_the_published_site(tmp_path, monkeypatch):
    monkeypatch.setenv("IM1_STATE_DIR", str(tmp_path))
    projects = json.loads(runtime.docs_env({})["AIRFLOW__COSMOS__DBT_DOCS_PROJECTS"])
    assert projects == {"im1": {"dir": str(tmp_path / "docs" / "dbt"), "index": "static_index.html",
                                "name": "dbt docs"}}
    assert runtime.docs_env({"AIRFLOW__COSMOS__DBT_DOCS_PROJECTS": "{}"}) == {}
