"""Key rotation without losing a batch (README "Operating: rotating keys").

PGP: the connection holds the old and the new secret key (one armored text, same passphrase)
while batches encrypted to either are in flight; with the new key alone, a batch still encrypted
to the old one is quarantined (and loads once it is released with both keys in place).
SSH: the pinned ``host_key`` holds the old and the new server key while the supplier switches.
"""

from __future__ import annotations

import dataclasses

import pytest

from im1.crypto import KeyPair, Keyring
from im1.ingest.errors import QuarantineError
from im1.transport.sftp import HostKeyError, SftpClient
from im1dev.sftp_server import generate_ed25519, public_key_line
from tests.ingest.conftest import batches, raw_count, run_core

ODS = "Z91401"


@pytest.fixture(scope="module")
def new_pgp_keys(pgp_keys) -> KeyPair:
    # the rotated key keeps the connection's passphrase, so one connection can hold both keys
    with Keyring(cache_passphrase=True) as kr:
        return kr.generate("IM1 test consumer 2027", "test-consumer@example.invalid", pgp_keys.passphrase)


def both(old: KeyPair, new: KeyPair) -> KeyPair:
    return dataclasses.replace(new, secret_armored=old.secret_armored + "\n" + new.secret_armored)


def test_batches_encrypted_to_the_old_or_the_new_key_load_while_both_are_configured(site, loader, pgp_keys,
                                                                                     new_pgp_keys):
    world = site.world([ODS])
    site.publish(world, 0)  # in flight: still encrypted to the old key
    site.keys = new_pgp_keys
    # the supplier has switched to the new public key (the next day's data: the same content again
    # would be held as a re-send)
    site.publish(site.world([ODS], seed=8), 1)
    site.keys = both(pgp_keys, new_pgp_keys)
    feed = site.feed("emis_rotation", [ODS])
    results = run_core(site, feed)
    assert [type(r).__name__ for r in results] == ["LoadResult", "LoadResult"], results
    assert [b[2] for b in batches(loader, feed.id)] == ["loaded", "loaded"]
    assert raw_count(loader, "admin_patient", feed.id) > 0


def test_with_only_the_new_key_an_old_batch_is_quarantined_until_released(site, loader, pgp_keys, new_pgp_keys):
    from im1.ingest import status

    world = site.world([ODS])
    site.publish(world, 0)  # encrypted to the old key
    site.keys = new_pgp_keys  # the old key was removed from the connection too early
    feed = site.feed("emis_rotation_early", [ODS])
    [err] = run_core(site, feed)
    assert isinstance(err, QuarantineError)
    [(org, key, state, rows, late, error)] = batches(loader, feed.id)
    assert state == "quarantined" and "key" in error.lower()
    assert raw_count(loader, "admin_patient", feed.id) == 0
    # put the old key back next to the new one, release the batch: it loads
    site.keys = both(pgp_keys, new_pgp_keys)
    feed = site.feed("emis_rotation_early", [ODS])
    batch_id = loader.execute("select batch_id from ingest.batches where feed_id = %s", (feed.id,)).fetchone()[0]
    status.release(loader, batch_id, "old PGP key restored for in-flight batches")
    [res] = run_core(site, feed)
    assert not isinstance(res, Exception) and res.rows > 0
    assert batches(loader, feed.id)[0][2] == "loaded"


def test_two_pinned_host_keys_accept_the_old_and_the_new_server_key(sftp_server, sftp_settings, ssh_keys, tmp_path):
    current = ssh_keys["host_line"]
    other = public_key_line(ssh_keys["other_host"])
    # the server still presents the old key, the connection already pins old + new (either order)
    for pins in (f"{current}\n{other}", f"{other}\n{current}"):
        with SftpClient(dataclasses.replace(sftp_settings, host_key=pins)) as c:
            assert list(c.walk("/")) == []
    # neither pinned key is the server's: refused, naming both attempts
    third = public_key_line(generate_ed25519(tmp_path / "third"))
    with pytest.raises(HostKeyError, match="none of the 2 pinned host keys matched"):
        SftpClient(dataclasses.replace(sftp_settings, host_key=f"{other}\n{third}")).connect()
    with pytest.raises(HostKeyError, match="CHANGED"):
        SftpClient(dataclasses.replace(sftp_settings, host_key=other)).connect()
