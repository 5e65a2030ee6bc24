"""The IM1 Airflow plugin: the operator view and the GX Data Docs in the UI, and a lineage listener.

Registered through the plugins folder (``plugins/im1_airflow_plugin.py`` imports :class:`Im1Plugin`;
``plugins/.airflowignore`` keeps Airflow from importing every module of the package as a plugin
file). Adds, under **Browse** in the Airflow UI:

* **IM1 operations**: per feed and organisation the latest batch, status, rows, error and
  freshness (``/im1/ops``, JSON at ``/im1/ops.json``);
* **Data quality (GX)**: the Great Expectations Data Docs (``/im1/gx/``).

The **dbt docs** entry comes from cosmos' plugin (configured in :func:`im1dev.runtime.docs_env`).
The FastAPI app is built only when the API server asks for it, so task processes stay light.
"""

from __future__ import annotations

from typing import Any

from airflow.listeners import hookimpl
from airflow.sdk.plugins_manager import AirflowPlugin


class LineageReset:
    """Start each task with an empty hook-lineage collector (see :func:`im1.airflow.lineage.reset_collector`).

    Workers run every task in a fresh process, but ``dag.test()``/``airflow dags test`` (the tests,
    ``im1 demo``) run a whole DAG run in one, where one task's reported inputs and outputs would
    leak into the next task's OpenLineage event. ``tryfirst``: before the OpenLineage listener.
    """

    @hookimpl(tryfirst=True)
    def on_task_instance_running(self, previous_state, task_instance):
        from im1.airflow.lineage import reset_collector

        reset_collector()


def _external_views() -> list[dict[str, Any]]:
    from im1.airflow.ui import api_base_path

    base = api_base_path()
    return [
        {"name": "IM1 operations", "href": f"{base}/im1/ops", "url_route": "im1-ops", "category": "Browse"},
        {"name": "Data quality (GX)", "href": f"{base}/im1/gx/index.html", "url_route": "im1-gx-docs",
         "category": "Browse"},
    ]


class Im1Plugin(AirflowPlugin):
    name = "im1"
    listeners = [LineageReset()]

    def __init__(self) -> None:
        super().__init__()
        self._apps: list[dict[str, Any]] | None = None

    @property
    def fastapi_apps(self) -> list[dict[str, Any]]:  # type: ignore[override]
        if self._apps is None:
            from im1.airflow.ui import create_app

            self._apps = [{"name": "im1", "app": create_app(), "url_prefix": "/im1"}]
        return self._apps

    @property
    def external_views(self) -> list[dict[str, Any]]:  # type: ignore[override]
        return _external_views()
