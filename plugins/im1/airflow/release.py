"""``im1_release``: re-queue a quarantined batch from the Airflow UI (the CLI twin of
``im1 ingest release``).

Trigger it with ``{"batch_id": <ingest.batches.batch_id>, "reason": "why it may load now"}``.
The batch (with the rest of its multi-organisation delivery) goes back to ``released``; the next
run of its feed's ingest DAG fetches it again and loads it, in extract-timestamp order (flagged
``is_late`` if a newer batch was loaded meanwhile).
"""

from __future__ import annotations

import datetime as dt

import pendulum
from airflow.sdk import DAG, Param, task

from im1.airflow.callbacks import notify_failure
from im1.warehouse import CONN_LOADER

DAG_ID = "im1_release"


def build_release_dag() -> DAG:
    with DAG(
        dag_id=DAG_ID,
        description="Re-queue a quarantined IM1 batch for its feed's next ingest run",
        schedule=None,
        start_date=pendulum.datetime(2025, 1, 1, tz="Europe/London"),
        catchup=False,
        default_args={
            "owner": "im1",
            "retries": 1,
            "retry_delay": dt.timedelta(seconds=30),
            "retry_exponential_backoff": 2.0,
            "max_retry_delay": dt.timedelta(minutes=5),
            "on_failure_callback": notify_failure,
        },
        params={
            "batch_id": Param(None, type=["null", "integer"], minimum=1,
                              description="ingest.batches.batch_id of the quarantined batch (im1 ingest status)"),
            "reason": Param("", type="string", description="Why it may be loaded now (kept in the ledger)"),
        },
        tags=["im1", "ingest", "release"],
        doc_md=__doc__,
    ) as dag:

        @task
        def release(params=None) -> str:
            import psycopg
            from airflow.sdk.exceptions import AirflowFailException

            from im1.airflow import connections
            from im1.ingest import ledger, status

            if not params.get("batch_id"):
                raise AirflowFailException("trigger with a batch_id, e.g. {\"batch_id\": 42, \"reason\": \"...\"}")
            with psycopg.connect(connections.postgres_conninfo(CONN_LOADER)) as conn:
                try:
                    message = status.release(conn, int(params["batch_id"]), params.get("reason") or None)
                except ledger.ReleaseError as err:
                    raise AirflowFailException(str(err)) from None
            print(message)
            return message

        release()
    return dag
