"""The IM1 pages inside the Airflow UI (a FastAPI app the Airflow 3 API server mounts at ``/im1``).

* ``/im1/ops``: the operator view: per feed and organisation the latest batch (id, extract time,
  status, rows, error), when it last loaded and how fresh it is; ``/im1/ops.json`` is the same as
  JSON. Read from the ledger (``ingest.*``) through the loader's Airflow connection (or
  ``IM1_OPS_CONN_ID``) in a read-only session: the BI role cannot read the ledger by design.
* ``/im1/gx/``: the Great Expectations Data Docs site the ingest DAG's quality tasks write under
  the state folder (:func:`im1.ingest.quality.data_docs_index`).

Both need a signed-in Airflow user (the UI's session cookie or a bearer token): Data Docs can show
sample values of failed checks and the ledger holds file names and error texts. The dbt docs site
is served by cosmos' own plugin (``/cosmos/im1/...``, configured in :func:`im1dev.runtime.docs_env`).
"""

from __future__ import annotations

import datetime as dt
import html
import os
from decimal import Decimal
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Query
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse

STALE_HOURS_ENV = "IM1_OPS_STALE_HOURS"
CONN_ENV = "IM1_OPS_CONN_ID"


def authenticated() -> None:  # replaced by Airflow's check in create_app (tests override it)
    return None


def _airflow_auth():
    from airflow.api_fastapi.core_api.security import requires_authenticated

    return requires_authenticated()


def api_base_path() -> str:
    from urllib.parse import urlsplit

    try:
        from airflow.configuration import conf

        return urlsplit(conf.get("api", "base_url", fallback="") or "").path.rstrip("/")
    except Exception:  # pragma: no cover - outside Airflow
        return ""


def ops_conninfo() -> str:
    """The ledger connection: ``IM1_OPS_CONN_ID`` or the loader's (read-only session, see :func:`read_only`)."""
    from im1.airflow import connections
    from im1.warehouse import CONN_LOADER

    return connections.postgres_conninfo(os.environ.get(CONN_ENV) or CONN_LOADER)


def read_only(conninfo: str):
    import psycopg

    return psycopg.connect(conninfo, autocommit=True, connect_timeout=5,
                           options="-c default_transaction_read_only=on -c statement_timeout=15000")


def expected_organisations() -> tuple[list[tuple[str, str]], str | None]:
    """(feed id, organisation) of every enabled feed in the config, and the config error if it is invalid."""
    from im1.config import load_config

    try:
        cfg = load_config()
    except Exception as err:  # the view must still show the ledger
        return [], f"{type(err).__name__}: {err}"
    out = []
    for feed in cfg.enabled_feeds:
        out += [(feed.id, o.ods_code) for o in feed.organisations]
        if feed.extract == "multi_organisation":
            out.append((feed.id, "*"))
    return out, None


def stale_hours() -> float:
    from im1.ingest.status import STALE_HOURS

    return float(os.environ.get(STALE_HOURS_ENV) or STALE_HOURS)


def overview(feed: str | None = None) -> dict[str, Any]:
    from im1.ingest import status

    expected, config_error = expected_organisations()
    with read_only(ops_conninfo()) as conn:
        rows = status.overview(conn, expected=expected, feed_id=feed, stale_hours=stale_hours())
    return {"generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "stale_hours": stale_hours(),
            "config_error": config_error, "rows": rows}


def _json_value(v):
    if isinstance(v, dt.datetime | dt.date):
        return v.isoformat()
    if isinstance(v, Decimal):
        return int(v) if v == v.to_integral_value() else float(v)
    return v


def _cell(v, *, fmt: str | None = None) -> str:
    if v is None or v == "":
        return '<td class="none">-</td>'
    if isinstance(v, dt.datetime):
        text = f"{v:%Y-%m-%d %H:%M}"
    elif fmt:
        text = format(v, fmt)
    else:
        text = str(v)
    return f"<td>{html.escape(text)}</td>"


STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.2rem;color:#1d2430}
h1{font-size:1.3rem;margin:0 0 .3rem}.sub{color:#5b6473;margin:0 0 1rem;font-size:.9rem}
table{border-collapse:collapse;font-size:.85rem;width:100%}th,td{border-bottom:1px solid #e3e6ea;padding:.35rem .5rem;
text-align:left;vertical-align:top}th{background:#f4f6f8;position:sticky;top:0}td.num{text-align:right}
td.none{color:#9aa3ad}tr.attention td{background:#fff6e5}.st-loaded{color:#17713a;font-weight:600}
.st-quarantined,.st-failed{color:#b42318;font-weight:600}.err{max-width:36rem;white-space:pre-wrap;word-break:break-word}
.warn{color:#b54708}a{color:#175cd3}
"""


def render_ops(data: dict[str, Any], base: str = "") -> str:
    head = ("<tr><th>feed</th><th>organisation</th><th>latest batch</th><th>extract time</th><th>status</th>"
            "<th>rows</th><th>error / note</th><th>last loaded at</th><th>hours since newest loaded extract</th>"
            "<th>batches loaded / quarantined / pending</th><th>needs attention</th></tr>")
    body = []
    for r in data["rows"]:
        status = r["status"] or ""
        if r["is_late"]:
            status += " (late)"
        note = r["error"] or (f"released: {r['release_note']}" if r.get("release_note") else "")
        if r.get("unclaimed_rows"):
            note = (note + "; " if note else "") + f"{r['unclaimed_rows']} unclaimed row(s)"
        batch = f"{r['batch_id']} {r['batch_key']}" if r["batch_id"] is not None else None
        age = "-" if r["age_hours"] is None else f"{r['age_hours']:.1f}"
        rows = "-" if r["rows_loaded"] is None else str(r["rows_loaded"])
        body.append(
            f'<tr class="{"attention" if r["attention"] else ""}">'
            f"{_cell(r['feed_id'])}{_cell(r['organisation'])}{_cell(batch)}{_cell(r['extract_ts'])}"
            f'<td class="st-{html.escape(r["status"] or "none")}">{html.escape(status) or "-"}</td>'
            f'<td class="num">{rows}</td>'
            f'<td class="err">{html.escape(note) or "-"}</td>{_cell(r["last_loaded_at"])}'
            f'<td class="num">{age}</td>'
            f'<td class="num">{r["loaded"]} / {r["quarantined"]} / {r["pending"]}</td>'
            f'<td class="warn">{html.escape(r["attention"])}</td></tr>')
    if not body:
        body.append('<tr><td colspan="11">No feed is configured and the ledger is empty.</td></tr>')
    banner = ""
    if data.get("config_error"):
        banner = f'<p class="warn">Feed configuration could not be read: {html.escape(data["config_error"])}</p>'
    return (
        '<!doctype html><html><head><meta charset="utf-8"><meta http-equiv="refresh" content="60">'
        f"<title>IM1 operations</title><style>{STYLE}</style></head><body>"
        "<h1>IM1 feeds: latest batch per feed and organisation</h1>"
        f'<p class="sub">From the ingest ledger at {html.escape(data["generated_at"])} (refreshes every minute). '
        f'Stale after {data["stale_hours"]:g} h. <a href="{base}/im1/ops.json">JSON</a> · '
        f'<a href="{base}/im1/gx/index.html">Data quality (GX Data Docs)</a> · '
        f'<a href="{base}/cosmos/im1/dbt_docs_index.html">dbt docs</a> · release a quarantined batch with the '
        "<code>im1_release</code> DAG or <code>im1 ingest release &lt;batch id&gt;</code></p>"
        f"{banner}<table><thead>{head}</thead><tbody>{''.join(body)}</tbody></table></body></html>")


def gx_site_dir() -> Path:
    from im1.ingest.quality import data_docs_index

    return data_docs_index().parent


def create_app(*, require_login: bool = True) -> FastAPI:
    """The app mounted at ``/im1``. ``require_login=False`` only for tests that bring their own check."""
    app = FastAPI(title="IM1 operator pages", docs_url=None, redoc_url=None, openapi_url=None)
    guard = [Depends(authenticated)]
    if require_login:
        app.dependency_overrides[authenticated] = _airflow_auth()

    @app.get("/", include_in_schema=False)
    def index():
        return RedirectResponse(f"{api_base_path()}/im1/ops")

    @app.get("/ops", response_class=HTMLResponse, dependencies=guard)
    def ops(feed: str | None = Query(default=None)):
        try:
            data = overview(feed)
        except Exception as err:
            return HTMLResponse(f"<pre>IM1 operator view: cannot read the ingest ledger: "
                                f"{html.escape(type(err).__name__)}: {html.escape(str(err))}</pre>", status_code=503)
        return HTMLResponse(render_ops(data, api_base_path()))

    @app.get("/ops.json", dependencies=guard)
    def ops_json(feed: str | None = Query(default=None)):
        try:
            data = overview(feed)
        except Exception as err:
            return JSONResponse({"error": f"cannot read the ingest ledger: {type(err).__name__}: {err}"},
                                status_code=503)
        data["rows"] = [{k: _json_value(v) for k, v in r.items()} for r in data["rows"]]
        return JSONResponse(data)

    @app.get("/gx/{path:path}", dependencies=guard)
    def gx_docs(path: str = ""):
        root = gx_site_dir().resolve()
        target = (root / (path or "index.html")).resolve()
        if not target.is_relative_to(root):
            raise HTTPException(status_code=404)
        if target.is_dir():
            target = target / "index.html"
        if not target.is_file():
            if not (root / "index.html").exists():
                return HTMLResponse("<p>No Great Expectations Data Docs yet: the ingest DAGs' <code>quality</code> "
                                    "tasks write them after the first load.</p>", status_code=404)
            raise HTTPException(status_code=404)
        return FileResponse(target, headers={"Content-Security-Policy": "frame-ancestors 'self'"})

    return app
