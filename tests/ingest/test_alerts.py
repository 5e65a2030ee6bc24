"""Failure notifications: a real failing task in the real ingest DAG (``dag.test()``) posts its alert
to a real HTTP server on loopback (``IM1_ALERT_WEBHOOK_URL``), naming the DAG, the task, the feed, the
organisation, the batch and the error; the task log gets the same text."""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pendulum
import pytest

from im1dev.synth import faults
from tests.ingest.conftest import ingest_dag

ODS = "Z91401"
LOGICAL = pendulum.datetime(2026, 11, 2, 6, tz="Europe/London")


@pytest.fixture()
def alert_log():
    """Messages of the ``im1.alerts`` logger, read from a handler on that logger itself (pytest's
    caplog sits on the root logger, which no longer hears it once Airflow's dag.test() has set up
    its own logging in this process)."""
    messages: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage())

    logger = logging.getLogger("im1.alerts")
    handler, disabled, level = Keep(logging.ERROR), logger.disabled, logger.level
    logger.addHandler(handler)
    logger.disabled = False
    logger.setLevel(logging.ERROR)
    yield messages
    logger.removeHandler(handler)
    logger.disabled, logger.level = disabled, level


@pytest.fixture()
def webhook(monkeypatch):
    """Every JSON body POSTed to the webhook, with the request's path and content type."""
    received: list[dict] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            received.append({"path": self.path, "type": self.headers["Content-Type"], "body": body})
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    srv = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    monkeypatch.setenv("IM1_ALERT_WEBHOOK_URL", f"http://127.0.0.1:{srv.server_port}/hooks/im1")
    monkeypatch.delenv("IM1_ALERT_SMTP_TO", raising=False)
    yield received
    srv.shutdown()
    srv.server_close()


def test_failed_load_posts_an_alert_naming_dag_task_feed_organisation_batch_and_error(site, loader, webhook,
                                                                                     alert_log):
    world = site.world([ODS])
    folder = site.publish(world, 0)
    faults.tamper(folder, "Admin_Patient")
    feed = site.feed("emis_alerted", [ODS])
    dag = ingest_dag(feed.id)
    run = dag.test(logical_date=LOGICAL)
    assert run.state == "failed"
    [batch_id, batch_key, status] = loader.execute(
        "select batch_id, batch_key, status from ingest.batches where feed_id = %s", (feed.id,)).fetchone()
    assert status == "quarantined"

    [hit] = [h for h in webhook if h["body"]["task_id"] == "organisation.load"]
    assert hit["path"] == "/hooks/im1" and hit["type"] == "application/json"
    alert = hit["body"]
    assert alert["dag_id"] == f"im1_ingest__{feed.id}"
    assert alert["feed"] == feed.id and alert["organisation"] == ODS
    assert alert["batches"] == [{"batch_id": batch_id, "batch_key": batch_key, "organisation": ODS,
                                 "status": "quarantined"}]
    assert "integrity check failed" in alert["error"] and "Admin_Patient" in alert["error"]
    assert alert["run_id"] == run.run_id
    text = alert["text"]
    for part in (f"im1_ingest__{feed.id}", "organisation.load", f"feed {feed.id}", f"organisation {ODS}",
                 f"batch {batch_id} {batch_key}", "integrity check failed"):
        assert part in text, (part, text)
    # only the failed task alerts (its downstream quality task is upstream_failed, not failed)
    assert [h["body"]["task_id"] for h in webhook] == ["organisation.load"]
    # the task log carries the same message (logged at ERROR by the im1.alerts logger; where the
    # handler writes depends on Airflow's logging set-up, so read the log record itself)
    assert text in alert_log


def test_without_a_webhook_or_smtp_the_alert_goes_to_the_task_log_only(monkeypatch, alert_log):
    from im1.airflow.callbacks import FailureNotifier

    monkeypatch.delenv("IM1_ALERT_WEBHOOK_URL", raising=False)
    monkeypatch.delenv("IM1_ALERT_SMTP_TO", raising=False)

    class Ti:
        dag_id, task_id, map_index, run_id, try_number, start_date = "im1_transform", "dbt.mart.run", -1, "r1", 1, None

    FailureNotifier()({"ti": Ti(), "run_id": "r1", "exception": RuntimeError("relation does not exist")})
    assert alert_log == [
        "IM1 ALERT: im1_transform.dbt.mart.run failed in run r1: RuntimeError: relation does not exist"]


@pytest.fixture()
def smtp_server():
    """A minimal SMTP server on loopback (no TLS, no auth) keeping each message's envelope and data."""
    import socketserver

    messages: list[dict] = []

    class Handler(socketserver.StreamRequestHandler):
        def handle(self):
            msg: dict = {"rcpt": []}
            self.wfile.write(b"220 test ESMTP\r\n")
            while line := self.rfile.readline():
                cmd = line.decode().strip()
                verb = cmd.split(" ", 1)[0].upper()
                if verb in ("EHLO", "HELO"):
                    self.wfile.write(b"250 test\r\n")
                elif verb == "MAIL":
                    msg["from"] = cmd
                    self.wfile.write(b"250 ok\r\n")
                elif verb == "RCPT":
                    msg["rcpt"].append(cmd)
                    self.wfile.write(b"250 ok\r\n")
                elif verb == "DATA":
                    self.wfile.write(b"354 go ahead\r\n")
                    data = []
                    while (chunk := self.rfile.readline()) not in (b".\r\n", b""):
                        data.append(chunk)
                    msg["data"] = b"".join(data).decode()
                    messages.append(msg)
                    msg = {"rcpt": []}
                    self.wfile.write(b"250 queued\r\n")
                elif verb == "QUIT":
                    self.wfile.write(b"221 bye\r\n")
                    return
                else:
                    self.wfile.write(b"250 ok\r\n")

    srv = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv.server_address[1], messages
    srv.shutdown()
    srv.server_close()


def test_alert_is_emailed_through_the_airflow_smtp_connection(smtp_server, monkeypatch):
    import email
    from email import policy

    from im1.airflow.callbacks import FailureNotifier

    port, messages = smtp_server
    monkeypatch.delenv("IM1_ALERT_WEBHOOK_URL", raising=False)
    monkeypatch.setenv("AIRFLOW_CONN_IM1_TEST_SMTP", json.dumps({
        "conn_type": "smtp", "host": "127.0.0.1", "port": port,
        "extra": {"disable_ssl": True, "disable_tls": True, "from_email": "im1-alerts@example.invalid"}}))
    monkeypatch.setenv("IM1_ALERT_SMTP_TO", "ops@example.invalid, oncall@example.invalid")
    monkeypatch.setenv("IM1_ALERT_SMTP_CONN_ID", "im1_test_smtp")

    class Ti:
        dag_id, task_id, map_index, run_id, try_number, start_date = "im1_transform", "dbt.mart.run", -1, "r2", 1, None

    FailureNotifier()({"ti": Ti(), "run_id": "r2", "exception": RuntimeError("relation does not exist")})
    [msg] = messages
    assert "im1-alerts@example.invalid" in msg["from"]
    assert sorted(r.lower() for r in msg["rcpt"]) == ["rcpt to:<oncall@example.invalid>", "rcpt to:<ops@example.invalid>"]
    mail = email.message_from_string(msg["data"], policy=policy.default)
    assert mail["Subject"] == "IM1 alert: im1_transform.dbt.mart.run failed"
    body = next(p for p in mail.walk() if p.get_content_type() == "text/html").get_content()
    assert "IM1 ALERT: im1_transform.dbt.mart.run failed in run r2: RuntimeError: relation does not exist" in body


PLANTED_DOB = "31/02/1887"  # a date of birth that is no date at all (and not ISO): fails its check


def _plant_date_of_birth(folder, keys, value: str) -> None:
    import csv
    import io

    def edit(data: bytes) -> bytes:
        rows = list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))
        rows[1][[c.lower() for c in rows[0]].index("dateofbirth")] = value
        out = io.StringIO()
        csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\r\n").writerows(rows)
        return out.getvalue().encode("utf-8")

    faults._rewrite(folder, "Admin_Patient", keys, edit)


def test_a_value_failing_its_check_appears_in_no_error_event_alert_or_data_docs(site, loader, webhook, caplog):
    """Issue 13: the quality step says the column, the row count and the kind of problem, never the
    value: not in the ledger's error, its events, the quality results, the webhook alert, the task
    log or any file GX writes (validation results, Data Docs); and those files are the owner's alone."""
    import os
    import stat
    from pathlib import Path

    from im1.ingest import quality

    world = site.world([ODS])
    folder = site.publish(world, 0)
    _plant_date_of_birth(folder, site.keys, PLANTED_DOB)
    feed = site.feed("emis_no_values", [ODS])
    run = ingest_dag(feed.id).test(logical_date=LOGICAL)
    assert run.state == "failed"
    [(batch_id, status, error)] = loader.execute(
        "select batch_id, status, error from ingest.batches where feed_id = %s", (feed.id,)).fetchall()
    assert status == "quarantined"
    assert "Admin_Patient.dateofbirth: 1 badly formatted value(s)" in error
    [hit] = [h for h in webhook if h["body"]["task_id"] == "organisation.quality"]
    assert "Admin_Patient.dateofbirth: 1 badly formatted value(s)" in hit["body"]["text"]

    def clean(text: str, where: str) -> None:
        assert PLANTED_DOB not in text and PLANTED_DOB.replace("/", "\\/") not in text, where

    clean(error, "ingest.batches.error")
    for (message,) in loader.execute("select message from ingest.events where feed_id = %s", (feed.id,)):
        clean(message, "ingest.events")
    for (observed,) in loader.execute("select observed_value::text from ingest.quality_checks "
                                      "where batch_id = %s", (batch_id,)):
        clean(observed, "ingest.quality_checks")
    clean(json.dumps(webhook), "the webhook")
    clean("\n".join(r.getMessage() for r in caplog.records), "the task log")
    root = quality.gx_root()
    assert quality.data_docs_index(root).exists()
    files = [str(Path(d) / f) for d, _, fs in os.walk(root) for f in fs]
    assert any("validations" in f for f in files)
    for path in files:
        with open(path, "rb") as fh:
            clean(fh.read().decode("utf-8", "replace"), path)
    for path in [root, *(Path(d) / x for d, ds, fs in os.walk(root) for x in ds + fs)]:
        assert stat.S_IMODE(os.stat(path).st_mode) & 0o077 == 0, (path, oct(os.stat(path).st_mode))


def test_a_database_error_in_an_alert_quotes_no_value(db):
    # PostgreSQL quotes the value it refused ("invalid input syntax for type date: "<value>""): the
    # alert keeps the kind of error and blanks the value (a real error from the real server)
    import psycopg

    from im1.airflow.callbacks import error_text

    with pytest.raises(psycopg.errors.DataError) as err:
        db.execute("select %s::date", ("Smith 31/02/1887",))
    text = error_text(RuntimeError("load failed"))  # not a database error: as it is
    assert text == "RuntimeError: load failed"
    text = error_text(err.value)
    assert "invalid input syntax for type date" in text and "Smith" not in text and "1887" not in text
