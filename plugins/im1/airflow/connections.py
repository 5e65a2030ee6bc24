"""Turn Airflow connections into the plain credential objects the core uses.

Connection shapes (extras follow the SSH/SFTP provider's names where one exists):

* SFTP (``conn_type: sftp``): ``login``; extra ``private_key`` (text) or ``key_file`` (path),
  ``private_key_passphrase``, and ``host_key`` - the server's public key, pinned
  (``ssh-ed25519 AAAA...``); while the supplier rotates its key, a list of keys (or one per
  line), any of which is accepted. Host and port come from the feed config.
* PGP (``conn_type: generic``): ``password`` is the key passphrase; extra ``private_key``
  (armored text), ``private_key_file`` (path) or ``private_key_env`` (an environment variable
  holding the key), and optionally ``passphrase_env``.
* Warehouse (``conn_type: postgres``): host, port, login, password, schema = database.
"""

from __future__ import annotations

from urllib.parse import quote

from im1.config import Feed
from im1.ingest.credentials import PgpKey
from im1.transport.sftp import SftpSettings


def _conn(conn_id: str):
    from airflow.sdk import BaseHook

    return BaseHook.get_connection(conn_id)


def sftp_settings(feed: Feed) -> SftpSettings:
    assert feed.transport.kind == "sftp"
    c = _conn(feed.transport.conn_id)
    extra = c.extra_dejson or {}
    key = extra.get("private_key") or extra.get("key_file")
    if not key:
        raise ValueError(f"connection {feed.transport.conn_id!r} has no private_key or key_file in its extra")
    host_key = extra.get("host_key")
    if isinstance(host_key, list):  # several pinned keys while the supplier rotates its key
        host_key = "\n".join(host_key)
    if not host_key:
        raise ValueError(
            f"connection {feed.transport.conn_id!r} has no pinned host_key; refusing to connect to an unverified "
            "server (add the supplier's SSH public key as extra.host_key)"
        )
    return SftpSettings(
        host=feed.transport.host,
        port=feed.transport.port,
        username=c.login or "",
        private_key=key,
        host_key=host_key,
        key_passphrase=extra.get("private_key_passphrase"),
    )


def transport_client(feed: Feed):
    """A client for the feed's landing place: SFTP (pinned host key, from the feed's connection) or a
    local gateway folder (TPP); both list, read and copy files the same way."""
    if feed.transport.kind == "folder":
        from im1.transport.folder import FolderClient

        return FolderClient(feed.transport.resolved())
    from im1.transport.sftp import SftpClient

    return SftpClient(sftp_settings(feed))


def pgp_key(feed: Feed) -> PgpKey:
    assert feed.pgp_conn_id
    c = _conn(feed.pgp_conn_id)
    extra = c.extra_dejson or {}
    try:
        return PgpKey.from_values(
            private_key=extra.get("private_key"),
            private_key_file=extra.get("private_key_file"),
            private_key_env=extra.get("private_key_env"),
            passphrase=c.password or None,
            passphrase_env=extra.get("passphrase_env"),
        )
    except ValueError as err:
        raise ValueError(f"connection {feed.pgp_conn_id!r}: {err}") from None


def postgres_conninfo(conn_id: str) -> str:
    c = _conn(conn_id)
    auth = quote(c.login or "")
    if c.password:
        auth += ":" + quote(c.password, safe="")
    return f"postgresql://{auth}@{c.host or '127.0.0.1'}:{c.port or 5432}/{c.schema or 'im1'}"
