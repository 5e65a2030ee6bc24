"""Failure notification for every IM1 task (``on_failure_callback`` in the DAGs' ``default_args``).

:class:`FailureNotifier` is an Airflow notifier (``airflow.sdk.BaseNotifier``). Its message names
the DAG, the task, the feed, the organisation, the batch(es) involved (looked up in the ingest
ledger) and the error. It always goes to the task log, and also

* to a **webhook** when ``IM1_ALERT_WEBHOOK_URL`` is set: a JSON POST with ``text`` (the message,
  the Slack/Teams/Mattermost shape) and the fields (``dag_id``, ``task_id``, ``feed``,
  ``organisation``, ``batches``, ``error``, ...);
* by **e-mail** when ``IM1_ALERT_SMTP_TO`` (comma-separated addresses) is set, through the Airflow
  SMTP connection ``IM1_ALERT_SMTP_CONN_ID`` (default: ``[email] email_conn_id``, else
  ``smtp_default``), e.g. ``AIRFLOW_CONN_SMTP_DEFAULT='smtp://user:password@mail.example.org:587'``;
  the sender is ``IM1_ALERT_SMTP_FROM`` or the connection's ``from_email`` extra.

A channel that fails is logged and does not stop the others.
"""

from __future__ import annotations

import html
import json
import logging
import os
import urllib.request
from typing import Any

from airflow.sdk import BaseNotifier

log = logging.getLogger("im1.alerts")

INGEST_PREFIX = "im1_ingest__"


def _ti(context) -> Any:
    return context.get("ti") or context.get("task_instance")


def feed_of(context) -> str | None:
    dag_id = getattr(_ti(context), "dag_id", None) or getattr(context.get("dag"), "dag_id", None) or ""
    if context.get("im1_feed"):
        return context["im1_feed"]
    return dag_id[len(INGEST_PREFIX):] if dag_id.startswith(INGEST_PREFIX) else None


def organisation_of(context) -> str | None:
    org = context.get("ods_code")
    if org:
        return str(org)
    rendered = getattr(_ti(context), "rendered_map_index", None)
    return str(rendered) if rendered not in (None, "") else None


def ledger_batches(feed: str, organisation: str | None, since) -> list[dict]:
    """The batches of ``feed`` (and organisation) the failed task touched, or else those still in flight."""
    import psycopg

    from im1.airflow import connections
    from im1.warehouse import CONN_LOADER

    where, args = "feed_id = %s", [feed]
    if organisation:
        where += " and organisation = %s"
        args.append(organisation)
    with psycopg.connect(connections.postgres_conninfo(CONN_LOADER), connect_timeout=5, autocommit=True,
                         options="-c default_transaction_read_only=on -c statement_timeout=5000") as conn:
        cols = "batch_id, batch_key, organisation, status"
        rows = []
        if since is not None:
            rows = conn.execute(f"select {cols} from ingest.batches where {where} and updated_at >= %s "  # noqa: S608
                                "and status <> 'loaded' order by extract_ts, batch_id", (*args, since)).fetchall()
        if not rows:
            rows = conn.execute(f"select {cols} from ingest.batches where {where} "  # noqa: S608 - fixed fragments
                                "and status in ('discovered', 'fetched', 'loading', 'failed') "
                                "order by extract_ts, batch_id", args).fetchall()
    return [{"batch_id": r[0], "batch_key": r[1], "organisation": r[2], "status": r[3]} for r in rows]


def error_text(exc) -> str:
    """The failure as the alert says it. A database error is reduced to its primary message with
    quoted literals blanked: PostgreSQL's DETAIL and CONTEXT (and messages such as "invalid input
    syntax ... '<value>'") quote row values, which may be patient data."""
    if not isinstance(exc, BaseException):
        return str(exc or "unknown error")
    import psycopg

    from im1.ingest.errors import database_error  # the ingest's own rule (imported late: not at DAG parse)

    for err in (exc, exc.__cause__, exc.__context__):
        if isinstance(err, psycopg.Error) and err.diag.message_primary:
            return f"{type(exc).__name__}: {database_error(err)} (database error; row values withheld)"
    return f"{type(exc).__name__}: {exc}"


def build_alert(context) -> dict[str, Any]:
    """The alert's fields and its one-paragraph text."""
    ti = _ti(context)
    dag_id = getattr(ti, "dag_id", None) or "?"
    task_id = getattr(ti, "task_id", None) or "?"
    map_index = getattr(ti, "map_index", -1)
    run_id = context.get("run_id") or getattr(ti, "run_id", None) or "?"
    error = error_text(context.get("exception"))
    feed, org = feed_of(context), organisation_of(context)
    batches: list[dict] = []
    if feed:
        try:
            batches = ledger_batches(feed, org, getattr(ti, "start_date", None))
        except Exception as err:  # the alert matters more than its detail
            log.warning("could not look up the batches of feed %s in the ledger: %s", feed, err)
    label = f"{task_id}[{org or map_index}]" if map_index not in (-1, None) else task_id
    where = [f"feed {feed}" if feed else None, f"organisation {org}" if org else None]
    if batches:
        where.append("batch " + ", ".join(f"{b['batch_id']} {b['batch_key']} ({b['organisation']}, {b['status']})"
                                          for b in batches))
    elif feed:
        where.append("batch: none recorded (see the task log)")
    context_text = "; ".join(w for w in where if w)
    text = f"IM1 ALERT: {dag_id}.{label} failed in run {run_id}" + (f" [{context_text}]" if context_text else "")
    text += f": {error}"
    return {
        "text": text,
        "dag_id": dag_id,
        "task_id": task_id,
        "map_index": map_index,
        "run_id": run_id,
        "try_number": getattr(ti, "try_number", None),
        "feed": feed,
        "organisation": org,
        "batches": batches,
        "error": error,
        "log_url": getattr(ti, "log_url", None),
    }


def alert_text(context) -> str:
    return build_alert(context)["text"]


class FailureNotifier(BaseNotifier):
    """Task log always; webhook and/or e-mail when configured (arguments, else the ``IM1_ALERT_*`` environment)."""

    def __init__(self, *, webhook_url: str | None = None, smtp_to: str | list[str] | None = None,
                 smtp_conn_id: str | None = None, smtp_from: str | None = None):
        super().__init__()
        self.webhook_url = webhook_url
        self.smtp_to = smtp_to
        self.smtp_conn_id = smtp_conn_id
        self.smtp_from = smtp_from

    def notify(self, context) -> None:
        alert = build_alert(context)
        log.error(alert["text"])
        url = self.webhook_url or os.environ.get("IM1_ALERT_WEBHOOK_URL")
        if url:
            try:
                post_webhook(url, alert)
            except Exception as err:
                log.error("could not post the alert to the webhook: %s", err)
        to = self.smtp_to or os.environ.get("IM1_ALERT_SMTP_TO")
        if to:
            try:
                self.send_email(alert, to, context)
            except Exception as err:
                log.error("could not e-mail the alert: %s", err)

    def send_email(self, alert: dict, to: str | list[str], context) -> None:
        from airflow.providers.smtp.notifications.smtp import SmtpNotifier

        try:
            from airflow.configuration import conf

            default_conn = conf.get("email", "email_conn_id", fallback="smtp_default")
        except Exception:  # pragma: no cover
            default_conn = "smtp_default"
        recipients = [a.strip() for a in to.split(",")] if isinstance(to, str) else list(to)
        where = " ".join(x for x in (alert["feed"], alert["organisation"]) if x)
        subject = f"IM1 alert: {alert['dag_id']}.{alert['task_id']} failed" + (f" ({where})" if where else "")
        rows = "".join(f"<tr><th align=left>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
                       for k, v in alert.items() if k != "text" and v not in (None, [], ""))
        body = f"<p>{html.escape(alert['text'])}</p><table>{rows}</table>"
        SmtpNotifier(to=recipients, from_email=self.smtp_from or os.environ.get("IM1_ALERT_SMTP_FROM") or None,
                     subject=subject, html_content=body,
                     smtp_conn_id=self.smtp_conn_id or os.environ.get("IM1_ALERT_SMTP_CONN_ID") or default_conn,
                     ).notify(context)


def post_webhook(url: str, alert: dict, timeout: float = 10) -> None:
    data = json.dumps(alert, default=str).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"}, method="POST")
    urllib.request.urlopen(req, timeout=timeout).close()


def notify_failure(context) -> None:
    """The DAGs' ``on_failure_callback``: :class:`FailureNotifier` with the ``IM1_ALERT_*`` settings."""
    FailureNotifier()(context)
