"""``im1 stack metabase-setup``: the first admin, then the warehouse connection as ``bi_reader``.

Metabase (a JVM server shipped as a container image) cannot run on this machine, so the calls
are checked against a small HTTP server on loopback that answers as Metabase's documented setup,
session and database endpoints do (setup token from ``/api/session/properties``, ``POST
/api/setup``, ``POST /api/session``, ``GET/POST/PUT /api/database``). What this proves is the
client's side: the order of the calls, their payloads, that it waits for health, and that a second
run updates instead of duplicating. The read-only role itself is tested against PostgreSQL in
tests/warehouse/test_warehouse.py.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from im1dev import stack

pytestmark = pytest.mark.unit  # no service: `make test-unit` runs it


class FakeMetabase:
    def __init__(self, unhealthy_polls: int = 2):
        self.unhealthy_polls = unhealthy_polls
        self.admin: dict | None = None
        self.databases: list[dict] = []
        self.calls: list[tuple[str, str]] = []
        self.sessions: set[str] = set()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _reply(self, code: int, body) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> dict:
                n = int(self.headers.get("Content-Length") or 0)
                return json.loads(self.rfile.read(n)) if n else {}

            def _authorised(self) -> bool:
                return self.headers.get("X-Metabase-Session") in outer.sessions

            def do_GET(self):
                outer.calls.append(("GET", self.path))
                if self.path == "/api/health":
                    if outer.unhealthy_polls > 0:
                        outer.unhealthy_polls -= 1
                        return self._reply(503, {"status": "initializing"})
                    return self._reply(200, {"status": "ok"})
                if self.path == "/api/session/properties":
                    return self._reply(200, {"setup-token": None if outer.admin else "setup-token-1",
                                             "has-user-setup": outer.admin is not None})
                if self.path == "/api/database":
                    if not self._authorised():
                        return self._reply(401, "Unauthenticated")
                    return self._reply(200, {"data": outer.databases, "total": len(outer.databases)})
                return self._reply(404, "not found")

            def do_POST(self):
                body = self._body()
                outer.calls.append(("POST", self.path))
                if self.path == "/api/setup":
                    if outer.admin is not None or body.get("token") != "setup-token-1":
                        return self._reply(403, "Token does not match the setup token.")
                    outer.admin = body["user"]
                    outer.sessions.add("s-setup")
                    return self._reply(200, {"id": "s-setup"})
                if self.path == "/api/session":
                    ok = outer.admin and body == {"username": outer.admin["email"],
                                                  "password": outer.admin["password"]}
                    if not ok:
                        return self._reply(401, {"errors": {"password": "did not match stored password"}})
                    outer.sessions.add("s-login")
                    return self._reply(200, {"id": "s-login"})
                if self.path == "/api/database":
                    if not self._authorised():
                        return self._reply(401, "Unauthenticated")
                    db = {"id": len(outer.databases) + 1, **body}
                    outer.databases.append(db)
                    return self._reply(200, db)
                return self._reply(404, "not found")

            def do_PUT(self):
                body = self._body()
                outer.calls.append(("PUT", self.path))
                if self.path.startswith("/api/database/") and self._authorised():
                    db_id = int(self.path.rsplit("/", 1)[1])
                    db = next(d for d in outer.databases if d["id"] == db_id)
                    db.update(body)
                    return self._reply(200, db)
                return self._reply(401, "Unauthenticated")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def metabase():
    mb = FakeMetabase()
    yield mb
    mb.close()


def settings(url: str, **over) -> stack.MetabaseSettings:
    base = dict(url=url, admin_email="admin@example.invalid", admin_password="change-me-metabase-admin-1",
                database_name="IM1 warehouse (marts)", host="warehouse", port=5432, dbname="im1",
                user="bi_reader", password="change-me-bi-reader")
    base.update(over)
    return stack.MetabaseSettings(**base)


def test_first_run_creates_the_admin_and_connects_the_warehouse_as_bi_reader(metabase, monkeypatch):
    monkeypatch.setattr(stack.time, "sleep", lambda s: None)
    assert stack.metabase_setup(settings(metabase.url), wait=30) == "created"
    assert metabase.admin["email"] == "admin@example.invalid"
    [db] = metabase.databases
    assert db["engine"] == "postgres" and db["name"] == "IM1 warehouse (marts)"
    d = db["details"]
    assert (d["host"], d["port"], d["dbname"], d["user"], d["password"]) == (
        "warehouse", 5432, "im1", "bi_reader", "change-me-bi-reader")
    assert d["schema-filters-patterns"] == "published"
    # it waited for Metabase to be healthy before anything else
    assert metabase.calls[:3] == [("GET", "/api/health")] * 3
    assert ("POST", "/api/session") not in metabase.calls


def test_a_second_run_logs_in_and_updates_the_connection(metabase, monkeypatch):
    monkeypatch.setattr(stack.time, "sleep", lambda s: None)
    stack.metabase_setup(settings(metabase.url), wait=30)
    assert stack.metabase_setup(settings(metabase.url, password="rotated-bi-password"), wait=30) == "updated"
    [db] = metabase.databases
    assert db["details"]["password"] == "rotated-bi-password"
    assert ("POST", "/api/session") in metabase.calls and ("PUT", "/api/database/1") in metabase.calls


def test_a_wrong_admin_password_is_a_clear_error(metabase, monkeypatch):
    monkeypatch.setattr(stack.time, "sleep", lambda s: None)
    stack.metabase_setup(settings(metabase.url), wait=30)
    with pytest.raises(stack.MetabaseError, match="POST /api/session: HTTP 401"):
        stack.metabase_setup(settings(metabase.url, admin_password="wrong"), wait=30)


def test_only_the_read_only_role_is_accepted(metabase):
    with pytest.raises(stack.MetabaseError, match="read-only role 'bi_reader'"):
        stack.metabase_setup(settings(metabase.url, user="transformer"), wait=1)
    assert metabase.calls == []


def test_metabase_not_coming_up_times_out_with_the_reason(monkeypatch):
    mb = FakeMetabase(unhealthy_polls=10**6)
    try:
        with pytest.raises(stack.MetabaseError, match="not healthy within"):
            stack.Metabase(mb.url).wait_healthy(timeout=0.5, every=0.05)
    finally:
        mb.close()


def test_settings_come_from_the_environment_of_the_compose_service(monkeypatch):
    from tests.stack.compose import service_env

    for k, v in service_env("metabase-setup").items():
        monkeypatch.setenv(k, v)
    s = stack.MetabaseSettings.from_env()
    assert (s.url, s.user, s.host, s.dbname) == ("http://metabase:3000", "bi_reader", "warehouse", "im1")
    assert s.password == "change-me-bi-reader"
