"""The transform DAG: the dbt project rendered into Airflow tasks by astronomer-cosmos.

The project is loaded from ``dbt_project/target/manifest.json`` (``LoadMode.DBT_MANIFEST``), built
at set-up by ``make manifest``; nothing runs dbt or touches the network while the DAG is parsed.
The DAG runs whenever any feed's raw Asset is updated (they are published through the one
AssetAlias ``im1_raw``, so parsing does not grow with the feeds) and can be triggered by hand. It uses
cosmos's watcher mode: one ``dbt build`` of the whole project, and per model a sensor task that
shows that model's (and its tests') result in the Airflow UI. After the build, ``dbt_docs`` runs
``dbt docs generate --static`` and publishes the site the UI serves (Browse -> dbt docs), even
when a model or test failed. The build also emits per-model OpenLineage events (see
:mod:`im1.airflow.lineage`).

dbt unit tests check the SQL, not the
data, so the daily build leaves them out; ``make test`` runs them (tests/dbt).

person_key needs the pseudonymisation key: every task hands ``IM1_PSEUDONYM_KEY`` to PostgreSQL
as the session setting ``im1.pseudonym_key`` (through ``PGOPTIONS``), so the secret never appears in
dbt's SQL, logs or artefacts.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pendulum
from airflow.sdk import DAG

from im1 import paths
from im1.airflow import lineage
from im1.airflow.callbacks import notify_failure
from im1.warehouse import CONN_TRANSFORMER

DAG_ID = "im1_transform"


def manifest_path() -> Path:
    return paths.dbt_project_dir() / "target" / "manifest.json"


def dbt_executable() -> str:
    candidate = Path(sys.executable).parent / "dbt"
    return str(candidate) if candidate.exists() else (shutil.which("dbt") or "dbt")


def pass_pseudonym_key(context=None) -> None:
    """Before a task runs: give dbt's PostgreSQL sessions the key from ``IM1_PSEUDONYM_KEY``.

    Read when the task starts, never at DAG-parse time (so the key is not in the serialized DAG).
    Without the variable nothing is set and the person_key model fails with a clear message.
    """
    from im1.warehouse.pseudonym import PSEUDONYM_KEY_ENV, pgoptions_with_key

    key = os.environ.get(PSEUDONYM_KEY_ENV, "").strip()
    if key:
        os.environ["PGOPTIONS"] = pgoptions_with_key(key, os.environ.get("PGOPTIONS", ""))


def transform_selection() -> list[str]:
    """dbt node selection of the transform DAG (``IM1_TRANSFORM_SELECT``, dbt selector syntax,
    space-separated): empty = the whole project. For a deployment that publishes only some marts
    (``+mart_list_size``), and for the distributed test, which needs one mart, not all of them."""
    return os.environ.get("IM1_TRANSFORM_SELECT", "").split()


def build_transform_dag() -> DAG:
    from cosmos import (
        DbtTaskGroup,
        ExecutionConfig,
        ExecutionMode,
        LoadMode,
        ProfileConfig,
        ProjectConfig,
        RenderConfig,
        TestBehavior,
        TestIndirectSelection,
    )
    from cosmos.operators.local import DbtDocsLocalOperator
    from cosmos.profiles import PostgresUserPasswordProfileMapping

    from im1.docs import publish_dbt_docs

    project_dir = paths.dbt_project_dir()
    manifest = manifest_path()
    if not manifest.exists():
        raise FileNotFoundError(
            f"dbt manifest {manifest} is missing: build it with `make manifest` (runs `dbt parse`)"
        )
    project_config = ProjectConfig(
        dbt_project_path=project_dir,
        manifest_path=manifest,
        install_dbt_deps=False,
        partial_parse=True,
    )
    profile_config = ProfileConfig(
        profile_name="im1",
        target_name="airflow",
        profile_mapping=PostgresUserPasswordProfileMapping(
            conn_id=CONN_TRANSFORMER,
            profile_args={"schema": "staging", "threads": int(os.environ.get("IM1_DBT_THREADS", "4"))},
        ),
    )
    from im1.airflow.ingest import raw_alias

    with DAG(
        dag_id=DAG_ID,
        description="dbt: raw IM1 tables -> staging -> intermediate -> marts, with tests",
        schedule=[raw_alias()],  # any organisation's raw data changed and passed its checks
        start_date=pendulum.datetime(2025, 1, 1, tz="Europe/London"),
        catchup=False,
        max_active_runs=1,
        default_args={
            "owner": "im1",
            "retries": 1,
            "retry_delay": pendulum.duration(minutes=2),
            "retry_exponential_backoff": 2.0,
            "max_retry_delay": pendulum.duration(minutes=30),
            "on_failure_callback": notify_failure,
            "on_execute_callback": pass_pseudonym_key,
        },
        tags=["im1", "transform", "dbt"],
        doc_md=__doc__,
    ) as dag:
        group = DbtTaskGroup(
            group_id="dbt",
            project_config=project_config,
            profile_config=profile_config,
            # WATCHER: one `dbt build` for the whole project, with a light sensor per model/test that
            # reports its result; an order of magnitude fewer dbt start-ups than a task per node
            # a narrowed build runs a test only when every model it reads is selected ("cautious"):
            # a relationship test to a mart-only lookup must not fail on a table the build skipped
            execution_config=ExecutionConfig(dbt_executable_path=dbt_executable(),
                                             execution_mode=ExecutionMode.WATCHER,
                                             test_indirect_selection=(TestIndirectSelection.CAUTIOUS
                                                                      if transform_selection()
                                                                      else TestIndirectSelection.EAGER)),
            render_config=RenderConfig(load_method=LoadMode.DBT_MANIFEST, test_behavior=TestBehavior.AFTER_EACH,
                                       select=transform_selection(), exclude=["resource_type:unit_test"]),
            # callback: after `dbt build`, one OpenLineage event per model with its own inputs
            operator_args={"install_deps": False, "callback": lineage.emit_dbt_lineage,
                           # the producer's `dbt build` takes the same cautious test selection
                           **({"dbt_cmd_flags": ["--indirect-selection", "cautious"]} if transform_selection() else {})},
        )
        _watchers_after_producer(group)
        docs = DbtDocsLocalOperator(
            task_id="dbt_docs",
            doc_md="`dbt docs generate --static` -> the dbt docs site served in the UI (Browse -> dbt docs)",
            project_dir=project_dir,
            profile_config=profile_config,
            dbt_executable_path=dbt_executable(),
            dbt_cmd_flags=["--static"],
            install_deps=False,
            emit_datasets=False,
            callback=publish_dbt_docs,
            trigger_rule="all_done",  # refresh the docs even when a model or a test failed
        )
        group >> docs
    return dag


def _watchers_after_producer(group) -> None:
    """Start the per-model watcher tasks once the single ``dbt build`` (the producer) has finished.

    cosmos leaves the root watchers of a *task group* unconnected so they can defer while the build
    runs; under ``dag.test()`` (tests, ``im1 demo``) tasks run one at a time, so a watcher deferring
    before the producer starts waits for ever. Placing the roots after the producer keeps one build per run, lets every watcher
    report its model's result from XCom at once, and shows a failed build on the failed models.
    The roots wait for the producer to be *done* (trigger rule ``all_done``), retries included.
    """
    tasks = list(_all_tasks(group))
    producer = next((t for t in tasks if t.task_id.endswith("dbt_producer_watcher")), None)
    if producer is None:
        return
    for task in tasks:
        if task is producer or task.task_id.endswith("dbt_producer_watcher_done"):
            continue
        if not task.upstream_task_ids:
            producer >> task
            # all_done, not always: a producer waiting to retry is not done, so the watchers wait
            # for the retry instead of polling a build that is not running
            task.trigger_rule = "all_done"


def _all_tasks(group):
    from airflow.sdk import TaskGroup

    for child in group.children.values():
        if isinstance(child, TaskGroup):
            yield from _all_tasks(child)
        else:
            yield child
