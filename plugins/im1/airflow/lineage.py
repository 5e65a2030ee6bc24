"""OpenLineage for the IM1 DAGs: delivered file -> archive -> raw table -> dbt staging -> marts.

The OpenLineage provider's listener emits a START and a COMPLETE/FAIL event for every Airflow
task (the transport is set in :func:`im1dev.runtime.lineage_env`: a folder of JSON files by default,
the console, or HTTP with ``OPENLINEAGE_URL``). This module adds what the listener cannot know:

* **ingest**: the tasks report what they read and wrote through Airflow's hook-lineage collector,
  which the listener puts into the task's COMPLETE event:

  - ``fetch``: ``sftp://<host>:<port>/<remote path>`` (the supplier's delivered file; OpenLineage
    namespace ``file://<host>:<port>``, name = the path; a TPP gateway folder's file is
    ``file://<path>``) -> ``file://<archive path>`` (the kept original; namespace ``file``);
  - ``organisation.load`` (and ``stage`` for a multi-organisation feed's shared tables): archived
    file -> ``postgres://<host>:<port>/<db>/raw_<supplier>/<table>`` (namespace
    ``postgres://<host>:<port>``, name ``<db>.raw_emis.<table>``, the names dbt's sources get). For a multi-organisation feed the
    per-practice rows pass through short-lived ``stage_emis`` tables; lineage shows the file -> raw
    table edge they stand for.

* **dbt**: cosmos' watcher mode runs one ``dbt build`` (the producer task), whose COMPLETE event
  carries *all* the build's inputs and outputs at once, and per-model watcher tasks whose events
  carry only the model's table. :func:`emit_dbt_lineage` (a cosmos callback on the producer) reads
  the build's ``manifest.json`` and ``run_results.json`` and emits one event per model or seed
  (job ``dbt.<unique_id>``, a child run of the producer's run) with that node's own parents as
  inputs, so a lineage UI shows raw table -> staging model -> mart edge by edge.

Nothing here may fail a task: lineage problems are logged and ignored.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path
from urllib.parse import quote, urlsplit

from im1 import specs

log = logging.getLogger(__name__)

LINEAGE_NODE_TYPES = ("model", "seed", "snapshot")


class _IngestLineage:
    """The "hook" the ingest tasks report lineage under (the collector keys entries by it)."""


_SOURCE = _IngestLineage()


def enabled() -> bool:
    try:
        from airflow.providers.openlineage import conf
    except ImportError:  # pragma: no cover - the provider is in the lock
        return False
    return not conf.is_disabled()


# -- dataset URIs ------------------------------------------------------------------------------


def warehouse_location(conninfo: str) -> tuple[str, int, str]:
    """(host, port, database) of a ``postgresql://`` URL."""
    parts = urlsplit(conninfo)
    return parts.hostname or "127.0.0.1", parts.port or 5432, parts.path.lstrip("/") or "im1"


def raw_table_uri(conninfo: str, supplier: str, table: str) -> str:
    from im1.warehouse.bootstrap import RAW_SCHEMAS

    host, port, db = warehouse_location(conninfo)
    return f"postgres://{host}:{port}/{db}/{RAW_SCHEMAS[supplier]}/{specs.raw_table_name(table)}"


def delivered_file_uri(host: str, port: int, remote_path: str) -> str:
    return f"sftp://{host}:{port}/{quote(remote_path.lstrip('/'))}"


def archive_file_uri(path: str | Path) -> str:
    return "file://" + quote(str(Path(path).resolve()))


# -- ingest: through the hook-lineage collector --------------------------------------------------


def report(inputs: list[str], outputs: list[str]) -> None:
    """Add asset URIs to this task's lineage (read by the OpenLineage listener when the task ends)."""
    if not (inputs or outputs) or not enabled():
        return
    try:
        from airflow.providers.common.compat.lineage.hook import get_hook_lineage_collector

        collector = get_hook_lineage_collector()
        for uri in dict.fromkeys(inputs):
            collector.add_input_asset(context=_SOURCE, uri=uri)
        for uri in dict.fromkeys(outputs):
            collector.add_output_asset(context=_SOURCE, uri=uri)
    except Exception:  # lineage must never fail a load
        log.warning("could not record lineage", exc_info=True)


def delivered_uri(feed, remote_path: str) -> str:
    """Where the supplier delivered a file: on its SFTP site, or in a local gateway folder (TPP)."""
    if feed.transport.kind == "sftp":
        return delivered_file_uri(feed.transport.host, feed.transport.port, remote_path)
    path = Path(remote_path)
    return archive_file_uri(path if path.is_absolute() else feed.transport.resolved() / path)


def record_fetch(feed, fetched: list[dict]) -> None:
    """``fetch``: each delivered file (SFTP site or gateway folder) -> its archived copy.

    Files are reported when the fetch result names where they came from (``remote_path``).
    """
    ins, outs = [], []
    for b in fetched:
        for f in b["files"]:
            if f.get("remote_path"):
                ins.append(delivered_uri(feed, f["remote_path"]))
                outs.append(archive_file_uri(f["archive_path"]))
    report(ins, outs)


def record_stage(feed, fetched: list[dict], conninfo: str, staged: list[dict]) -> None:
    """``stage`` (multi-organisation feeds): the shared tables' archived files -> their raw tables."""
    done = [{"batch_id": r["delivery_batch_id"], "skipped": not (r.get("staged") or r.get("shared_rows"))}
            for r in staged]
    record_load(feed, "*", fetched, conninfo, done)


def files_loaded_by(feed, ods_code: str, fetched: dict) -> list[dict]:
    """The files of a fetched batch whose rows the ``load`` (or, for ``*``, ``stage``) step puts in raw
    (the feed's adapter decides: a TPP manifest is archived, not loaded; shared tables go in as ``*``)."""
    from im1.ingest.adapters import adapter_for
    from im1.ingest.model import FetchedBatch

    return [f.to_dict() for f in adapter_for(feed).rows_into_raw(ods_code, FetchedBatch.from_dict(fetched))]


def record_load(feed, ods_code: str, fetched: list[dict], conninfo: str, results: list[dict] | None = None) -> None:
    """``load``/``stage``: archived file -> raw table, for the batches this task actually loaded.

    ``results`` are the load step's results (``batch_id``, ``skipped``); without them every fetched
    batch counts.
    """
    loaded = None
    if results is not None:
        loaded = {int(r["batch_id"]) for r in results if not r.get("skipped") and r.get("batch_id") is not None}
    ins, outs = [], []
    for b in fetched:
        bid = b["batch_ids"].get(ods_code)
        if loaded is not None and (bid is None or int(bid) not in loaded):
            continue
        for f in files_loaded_by(feed, ods_code, b):
            ins.append(archive_file_uri(f["archive_path"]))
            outs.append(raw_table_uri(conninfo, feed.supplier, f["table"]))
    report(ins, outs)


def reset_collector() -> None:
    """Empty the hook-lineage collector (see :class:`im1.airflow.plugin.LineageReset`)."""
    try:
        from airflow.sdk.lineage import get_hook_lineage_collector

        get_hook_lineage_collector.cache_clear()
    except (ImportError, AttributeError):  # pragma: no cover - older Airflow keeps a module global
        pass


# -- dbt: one event per model/seed of a cosmos build -----------------------------------------------


def _relation(node: dict) -> str:
    return f"{node['database']}.{node['schema']}.{node.get('alias') or node.get('identifier') or node['name']}"


def _parents(manifest: dict, node: dict, seen: set[str] | None = None) -> list[str]:
    """The relations a node reads: sources and materialised models/seeds (through ephemeral models)."""
    seen = set() if seen is None else seen
    out: list[str] = []
    for uid in node.get("depends_on", {}).get("nodes", []):
        if uid in seen:
            continue
        seen.add(uid)
        if uid in manifest.get("sources", {}):
            out.append(_relation(manifest["sources"][uid]))
            continue
        parent = manifest.get("nodes", {}).get(uid)
        if parent is None or parent.get("resource_type") not in LINEAGE_NODE_TYPES:
            continue
        if parent.get("config", {}).get("materialized") == "ephemeral":
            out.extend(_parents(manifest, parent, seen))
        else:
            out.append(_relation(parent))
    return list(dict.fromkeys(out))


def _event_time(result: dict) -> str:
    ends = [t["completed_at"] for t in result.get("timing", []) if t.get("completed_at")]
    return max(ends) if ends else dt.datetime.now(dt.UTC).isoformat()


def dbt_node_events(manifest: dict, run_results: dict, *, dataset_namespace: str, job_namespace: str,
                    parent: dict | None = None) -> list:
    """OpenLineage RunEvents, one per model/seed/snapshot that dbt ran (COMPLETE on success, FAIL on error).

    ``parent``: ``{"run_id", "job_name", "root_run_id", "root_job_name"}`` of the Airflow task run
    that ran dbt (the events become its child runs). Pure: no I/O, no Airflow.
    """
    from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
    from openlineage.client.facet_v2 import (
        error_message_run,
        job_type_job,
        parent_run,
        schema_dataset,
        sql_job,
    )
    from openlineage.client.uuid import generate_new_uuid

    producer = "https://github.com/im1-platform/im1 (im1.airflow.lineage)"
    events = []
    for result in run_results.get("results", []):
        node = manifest.get("nodes", {}).get(result.get("unique_id"))
        if node is None or node.get("resource_type") not in LINEAGE_NODE_TYPES:
            continue
        if node.get("config", {}).get("materialized") == "ephemeral":
            continue
        status = result.get("status")
        if status not in ("success", "error"):
            continue  # skipped (an upstream failed) or not run
        columns = node.get("columns") or {}
        out_facets = {}
        if columns:
            out_facets["schema"] = schema_dataset.SchemaDatasetFacet(fields=[
                schema_dataset.SchemaDatasetFacetFields(name=c.get("name") or name, type=c.get("data_type"),
                                                        description=c.get("description") or None)
                for name, c in columns.items()])
        run_facets: dict = {}
        if parent:
            run_facets["parent"] = parent_run.ParentRunFacet(
                run=parent_run.Run(runId=parent["run_id"]),
                job=parent_run.Job(namespace=job_namespace, name=parent["job_name"]),
                root=parent_run.Root(run=parent_run.RootRun(runId=parent["root_run_id"]),
                                     job=parent_run.RootJob(namespace=job_namespace, name=parent["root_job_name"])),
            )
        if status == "error":
            run_facets["errorMessage"] = error_message_run.ErrorMessageRunFacet(
                message=(result.get("message") or "dbt reported an error")[:2000], programmingLanguage="SQL")
        job_facets: dict = {"jobType": job_type_job.JobTypeJobFacet(
            processingType="BATCH", integration="DBT", jobType=node["resource_type"].upper())}
        sql = result.get("compiled_code") or node.get("compiled_code")
        if sql:
            job_facets["sql"] = sql_job.SQLJobFacet(query=sql)
        events.append(RunEvent(
            eventType=RunState.COMPLETE if status == "success" else RunState.FAIL,
            eventTime=_event_time(result),
            run=Run(runId=str(generate_new_uuid()), facets=run_facets),
            job=Job(namespace=job_namespace, name=f"dbt.{node['unique_id']}", facets=job_facets),
            inputs=[InputDataset(namespace=dataset_namespace, name=r) for r in _parents(manifest, node)],
            outputs=[OutputDataset(namespace=dataset_namespace, name=_relation(node), facets=out_facets)],
            producer=producer,
        ))
    return events


def _parent_of(context) -> dict | None:
    ti = (context or {}).get("ti") or (context or {}).get("task_instance")
    if ti is None:
        return None
    from airflow.providers.openlineage.plugins import macros

    return {"run_id": macros.lineage_run_id(ti), "job_name": macros.lineage_job_name(ti),
            "root_run_id": macros.lineage_root_run_id(ti), "root_job_name": macros.lineage_root_job_name(ti)}


def emit_dbt_lineage(project_dir: str, context=None, **_kwargs) -> int:
    """cosmos callback (``operator_args["callback"]``): per-node lineage of the dbt command that just ran.

    Called with cosmos' temporary copy of the project, whose ``target/`` holds the run's artefacts.
    Returns the number of events emitted.
    """
    if not enabled():
        return 0
    try:
        target = Path(project_dir) / "target"
        results_file = target / "run_results.json"
        if not results_file.exists():
            return 0
        manifest = json.loads((target / "manifest.json").read_text())
        run_results = json.loads(results_file.read_text())
        from airflow.providers.openlineage import conf
        from airflow.providers.openlineage.plugins.listener import get_openlineage_listener

        from im1.airflow import connections
        from im1.warehouse import CONN_TRANSFORMER

        host, port, _db = warehouse_location(connections.postgres_conninfo(CONN_TRANSFORMER))
        events = dbt_node_events(manifest, run_results, dataset_namespace=f"postgres://{host}:{port}",
                                 job_namespace=conf.namespace(), parent=_parent_of(context))
        adapter = get_openlineage_listener().adapter
        for event in events:
            adapter.emit(event)
        log.info("OpenLineage: %d dbt node event(s) emitted", len(events))
        return len(events)
    except Exception:
        log.warning("could not emit the dbt lineage events", exc_info=True)
        return 0
