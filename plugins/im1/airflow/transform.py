"""The transform DAG: the dbt project rendered into Airflow tasks by astronomer-cosmos.

The project is loaded from ``dbt_project/target/manifest.json`` (``LoadMode.DBT_MANIFEST``), built
at set-up by ``make manifest``; nothing runs dbt or touches the network while the DAG is parsed.
The DAG runs whenever any feed's raw Asset is updated (and can be triggered by hand).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pendulum
from airflow.sdk import DAG

from im1 import paths
from im1.airflow.callbacks import notify_failure
from im1.warehouse import CONN_TRANSFORMER

DAG_ID = "im1_transform"


def manifest_path() -> Path:
    return paths.dbt_project_dir() / "target" / "manifest.json"


def dbt_executable() -> str:
    candidate = Path(sys.executable).parent / "dbt"
    return str(candidate) if candidate.exists() else (shutil.which("dbt") or "dbt")


def build_transform_dag(raw_assets: list) -> DAG:
    from cosmos import (
        DbtTaskGroup,
        ExecutionConfig,
        LoadMode,
        ProfileConfig,
        ProjectConfig,
        RenderConfig,
        TestBehavior,
    )
    from cosmos.profiles import PostgresUserPasswordProfileMapping

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
    schedule = None
    if raw_assets:
        from airflow.sdk import AssetAny

        schedule = AssetAny(*raw_assets)
    with DAG(
        dag_id=DAG_ID,
        description="dbt: raw IM1 tables -> staging -> intermediate -> marts, with tests",
        schedule=schedule,
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
        },
        tags=["im1", "transform", "dbt"],
        doc_md=__doc__,
    ) as dag:
        DbtTaskGroup(
            group_id="dbt",
            project_config=project_config,
            profile_config=profile_config,
            execution_config=ExecutionConfig(dbt_executable_path=dbt_executable()),
            render_config=RenderConfig(load_method=LoadMode.DBT_MANIFEST, test_behavior=TestBehavior.AFTER_EACH),
            operator_args={"install_deps": False},
        )
    return dag
