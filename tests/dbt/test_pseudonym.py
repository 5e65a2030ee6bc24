"""person_key: the HMAC-SHA256 dbt macro equals Python's hmac, and the key reaches PostgreSQL
only as a session setting (never in SQL text)."""

from __future__ import annotations

import hashlib
import hmac
import subprocess

import psycopg
import pytest

from im1 import paths
from im1dev import runtime

SPLIT = "-- @@split@@"


@pytest.fixture(scope="module")
def compiled(warehouse, tmp_path_factory) -> dict[str, str]:
    """The macros compiled by dbt itself (one dbt invocation), as SQL with psycopg placeholders."""
    snippets = {
        "hmac": "select {{ im1_hmac_sha256(\"convert_to(%(msg)s, 'UTF8')\", \"decode(%(key)s, 'hex')\") }} as h",
        "person_key": "select {{ im1_person_key('%(nhs)s') }} as person_key",
        "require": "{{ im1_require_pseudonym_key() }}",
    }
    inline = f"\n{SPLIT}\n".join(snippets.values())
    res = subprocess.run(runtime.dbt_cmd("compile", "--quiet", "--inline", inline, "--target-path",
                                         str(tmp_path_factory.mktemp("dbt") / "target")), env=runtime.local_env(warehouse),
                         cwd=paths.project_root(), capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    parts = [p.strip() for p in res.stdout.split(SPLIT)]
    assert len(parts) == len(snippets), res.stdout
    return dict(zip(snippets, parts, strict=True))


@pytest.fixture()
def conn(warehouse):
    with psycopg.connect(warehouse.admin_url, autocommit=True) as c:
        yield c


VECTORS = [
    (b"\x0b" * 20, "Hi There"),  # RFC 4231 test case 1
    (b"Jefe", "what do ya want for nothing?"),  # RFC 4231 test case 2: a key shorter than the block
    (b"\xaa" * 131, "Test Using Larger Than Block-Size Key - Hash Key First"),  # key hashed first
    (b"\x01" * 64, "exactly one block of key"),
    (b"\x02" * 65, "one byte over the block"),
    (bytes(range(32)), ""),
    (bytes(range(32)), "9990000018"),
    (b"k", "Zoë Ó Súilleabháin"),  # UTF-8 message
]


@pytest.mark.parametrize(("key", "msg"), VECTORS)
def test_hmac_macro_equals_python_hmac(compiled, conn, key, msg):
    got = conn.execute(compiled["hmac"], {"msg": msg, "key": key.hex()}).fetchone()[0]
    assert got == hmac.new(key, msg.encode(), hashlib.sha256).hexdigest()


def test_rfc4231_case_1_known_answer(compiled, conn):
    got = conn.execute(compiled["hmac"], {"msg": "Hi There", "key": ("0b" * 20)}).fetchone()[0]
    assert got == "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"


def _person_key(conn, compiled, setting: str, nhs: str | None) -> str | None:
    conn.execute("select set_config('im1.pseudonym_key', %s, false)", (setting,))
    return conn.execute(compiled["person_key"], {"nhs": nhs}).fetchone()[0]


def test_person_key_normalises_the_nhs_number_and_uses_the_session_key(compiled, conn):
    key = "5f" * 32
    want = hmac.new(bytes.fromhex(key), b"9990000018", hashlib.sha256).hexdigest()
    for written in ("9990000018", "999 000 0018", "999-000-0018", " 9990000018 "):
        assert _person_key(conn, compiled, key, written) == want
    for bad in (None, "", "12345", "99900000181", "999000001X"):
        assert _person_key(conn, compiled, key, bad) is None
    # another key, another pseudonym; a key that is not hex is used as its UTF-8 text
    assert _person_key(conn, compiled, "6a" * 32, "9990000018") != want
    text_key = "correct horse battery staple"
    assert _person_key(conn, compiled, text_key, "9990000018") == hmac.new(
        text_key.encode(), b"9990000018", hashlib.sha256).hexdigest()


def test_key_arrives_through_pgoptions_and_never_in_sql(compiled, warehouse):
    key = "a secret with spaces and a back\\slash"
    opts = runtime.pgoptions_with_key(key, "-c statement_timeout=0")
    with psycopg.connect(warehouse.admin_url, options=opts, autocommit=True) as c:
        assert c.execute("select current_setting('im1.pseudonym_key')").fetchone()[0] == key
        got = c.execute(compiled["person_key"], {"nhs": "9990000018"}).fetchone()[0]
    assert got == hmac.new(key.encode(), b"9990000018", hashlib.sha256).hexdigest()
    assert key not in compiled["person_key"] and "im1.pseudonym_key" in compiled["person_key"]


def test_missing_key_fails_clearly(compiled, conn):
    conn.execute("select set_config('im1.pseudonym_key', '', false)")
    with pytest.raises(psycopg.errors.RaiseException) as err:
        conn.execute(compiled["require"])
    assert "pseudonymisation key" in str(err.value)
    assert "IM1_PSEUDONYM_KEY" in (err.value.diag.message_hint or "")
    conn.execute("select set_config('im1.pseudonym_key', %s, false)", ("ab" * 32,))
    conn.execute(compiled["require"])  # passes with a key


def test_runtime_generates_a_private_key_once(tmp_path, monkeypatch):
    monkeypatch.setenv("IM1_STATE_DIR", str(tmp_path))
    monkeypatch.delenv(runtime.PSEUDONYM_KEY_ENV, raising=False)
    first = runtime.pseudonym_key()
    assert len(first) == 64 and int(first, 16) >= 0
    assert runtime.pseudonym_key_file().stat().st_mode & 0o777 == 0o600
    assert runtime.pseudonym_key() == first
    monkeypatch.setenv(runtime.PSEUDONYM_KEY_ENV, "cd" * 32)
    assert runtime.pseudonym_key() == "cd" * 32
    assert runtime.pgoptions_with_key("cd" * 32, f"-c im1.pseudonym_key={first}") == f"-c im1.pseudonym_key={'cd' * 32}"
