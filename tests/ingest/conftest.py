"""Fixtures for the ingest tests: a synthetic EMIS supplier on a real SFTP server, real gpg keys,
the real warehouse, and feed configurations (files + Airflow connections) built per test."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest

from im1.config import Feed, load_config
from im1.crypto import KeyPair, Keyring
from im1.ingest.credentials import PgpKey
from im1.transport.sftp import SftpSettings
from im1.warehouse import LOADER
from im1dev.synth import emis as synth_emis
from im1dev.synth.world import World, build_world

START = dt.date(2026, 11, 2)


def guid(n: int) -> str:
    return "{" + f"{n:08X}-1111-4222-8333-{n:012X}" + "}"


@dataclass
class Site:
    """The supplier's SFTP site for one sharing agreement, plus how the platform is configured for it."""

    server: object
    keys: KeyPair
    ssh_keys: dict
    tmp: Path
    monkeypatch: pytest.MonkeyPatch
    agreement: str
    loader_url: str
    feed_ids: list[str] = field(default_factory=list)
    other_keys: KeyPair | None = None  # a key pair that is not the consumer's

    @property
    def feed_dir(self) -> Path:
        return self.server.root / "IM1" / "sftp" / self.agreement

    def world(self, ods: list[str], *, patients: int = 40, seed: int = 7, inactive: list[str] = (),
              days: int = 1) -> World:
        # a short history keeps batches small: these tests exercise the ingest mechanics, not volume
        w = build_world(seed=seed, patients_per_practice=patients, ods_codes=ods,
                        org_guids={o: guid(int(o[1:])) for o in ods}, agreement_guid=self.agreement, start=START,
                        years=1, volume=0.3, days=days)
        for p in w.practices:
            p.activated = p.ods_code not in inactive
        return w

    def publish(self, world: World, day: int = 0, *, batch_number: int | None = None, version: str = "8.2",
                hour: int = 2) -> Path:
        on = START + dt.timedelta(days=day)
        ts = dt.datetime.combine(on, dt.time(hour))
        with Keyring() as kr:
            kr.import_key(self.keys.public_armored)
            files = synth_emis.write_batch(world, synth_emis.snapshot(world, on), self.feed_dir, extract_ts=ts,
                                           batch_number=batch_number or day + 1, export_type="bulk", keyring=kr,
                                           recipient=self.keys.fingerprint, version=version)
        return files[0].parent

    def feed(self, feed_id: str, orgs: list[str], *, extract: str = "organisation", retries: int = 0,
             **extra) -> Feed:
        """Write a feeds file for this site (and its Airflow connections) and return the feed."""
        org_yaml = ", ".join(f'{{ods_code: {o}, supplier_org_id: "{guid(int(o[1:]))}"}}' for o in orgs)
        more = "".join(f"    {k}: {v}\n" for k, v in extra.items())  # keys of the feed (4 spaces in)
        text = textwrap.dedent(f"""
            version: 1
            feeds:
              - id: {feed_id}
                supplier: emis
                extract: {extract}
                transport: {{kind: sftp, host: 127.0.0.1, port: {self.server.port}, path: /IM1/sftp/{self.agreement},
                             conn_id: t_sftp}}
                pgp_conn_id: t_pgp
                sharing_agreement_guid: {self.agreement}
                organisations: [{org_yaml}]
                retries: {retries}
                retry_delay_minutes: 0.005
                max_retry_delay_minutes: 0.01
        """) + more
        path = self.tmp / f"feeds_{feed_id}.yaml"
        path.write_text(text)
        self.monkeypatch.setenv("IM1_FEEDS_FILE", str(path))
        self.monkeypatch.setenv("AIRFLOW_CONN_T_SFTP", json.dumps({
            "conn_type": "sftp", "login": "supplier-test",
            "extra": {"key_file": str(self.ssh_keys["client_file"]), "host_key": self.ssh_keys["host_line"]},
        }))
        keyfile = self.tmp / "pgp_secret.asc"
        keyfile.write_text(self.keys.secret_armored)
        self.monkeypatch.setenv("AIRFLOW_CONN_T_PGP", json.dumps({
            "conn_type": "generic", "password": self.keys.passphrase, "extra": {"private_key_file": str(keyfile)},
        }))
        self.feed_ids.append(feed_id)
        return load_config(path).feed(feed_id)

    @property
    def pgp(self) -> PgpKey:
        return PgpKey(self.keys.secret_armored, self.keys.passphrase)

    def sftp_settings(self) -> SftpSettings:
        return SftpSettings(host="127.0.0.1", port=self.server.port, username="supplier-test",
                            private_key=str(self.ssh_keys["client_file"]), host_key=self.ssh_keys["host_line"],
                            timeout=10)


@pytest.fixture()
def site(sftp_server, pgp_keys, other_pgp_keys, ssh_keys, tmp_path, monkeypatch, warehouse, request):
    # a sharing agreement per test keeps every test's files, ledger rows and raw rows apart
    n = int(hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:10], 16)
    agreement = f"{n % 0xFFFFFFFF:08X}-AAAA-4BBB-8CCC-{n:012X}"
    return Site(sftp_server, pgp_keys, ssh_keys, tmp_path, monkeypatch, agreement, warehouse.role_url(LOADER),
                other_keys=other_pgp_keys)


@pytest.fixture()
def loader(warehouse):
    with psycopg.connect(warehouse.role_url(LOADER), autocommit=True) as conn:
        yield conn


def raw_count(conn, table: str, feed_id: str, organisation: str | None = None) -> int:
    q = f"select count(*) from raw_emis.{table} where _feed_id = %s"  # noqa: S608 - test helper, fixed names
    args: list = [feed_id]
    if organisation:
        q += " and _organisation = %s"
        args.append(organisation)
    return conn.execute(q, args).fetchone()[0]


def batches(conn, feed_id: str) -> list[tuple]:
    return conn.execute(
        "select organisation, batch_key, status, rows_loaded, is_late, error from ingest.batches "
        "where feed_id = %s order by extract_ts, organisation, batch_id", (feed_id,)).fetchall()


def events(conn, feed_id: str) -> list[str]:
    return [r[0] for r in conn.execute("select message from ingest.events where feed_id = %s order by event_id",
                                       (feed_id,))]


def ingest_dag(feed_id: str):
    """The feed's ingest DAG as the DAG processor builds it from the current feeds file."""
    from airflow.dag_processing.dagbag import DagBag

    from im1 import paths

    bag = DagBag(dag_folder=str(paths.dags_dir() / "im1_ingest.py"))
    assert bag.import_errors == {}, bag.import_errors
    return bag.get_dag(f"im1_ingest__{feed_id}")


def run_core(site: Site, feed: Feed) -> list:
    """One ingest run without Airflow (:meth:`Pipeline.run_once`: discover -> fetch -> stage -> load).

    Returns each organisation's load result, or the QuarantineError it raised.
    """
    from im1.ingest.pipeline import Pipeline
    from im1.transport.sftp import SftpClient

    with SftpClient(site.sftp_settings()) as c:
        return Pipeline(feed, site.loader_url, key=site.pgp).run_once(c)


def replace_table(folder: Path, table: str, encrypted: Path) -> Path:
    """Swap one table's file in a published batch for another encrypted file (atomically)."""
    import shutil

    from im1dev.synth import faults

    p = faults.table_file(folder, table)
    tmp = p.with_name(p.name + ".uploading")
    shutil.copyfile(encrypted, tmp)
    tmp.replace(p)
    return p


BIG_ROWS = 250_000


@pytest.fixture(scope="session")
def big_observations(tmp_path_factory, pgp_keys) -> Path:
    """A CareRecord_Observation file of BIG_ROWS rows encrypted to the session key (COPY takes ~1 s)."""
    from im1dev.bench import observations

    d = tmp_path_factory.mktemp("big")
    plain = d / "obs.csv"
    observations.write(plain, BIG_ROWS, org_guids=[guid(91101)])
    out = d / "obs.csv.gpg"
    with Keyring() as kr:
        kr.import_key(pgp_keys.public_armored)
        kr.encrypt_file(plain, out, pgp_keys.fingerprint)
    plain.unlink()
    return out


# -- TPP SystmOne: a gateway folder the synthetic supplier writes batch folders into -----------------


@dataclass
class Gateway:
    """A TPP gateway folder (what the TPP client writes into) and the platform's feed for it."""

    root: Path
    tmp: Path
    monkeypatch: pytest.MonkeyPatch
    loader_url: str

    def world(self, ods: str, *, patients: int = 40, seed: int = 11, days: int = 6,
              community_share: float = 0.2) -> World:
        # a short history keeps batches small: these tests exercise the ingest mechanics, not volume
        return build_world(seed=seed, patients_per_practice=patients, ods_codes=[ods], start=START, days=days,
                           years=1, volume=0.3, supplier="tpp", community_share=community_share)

    def publish(self, world: World, day: int = 0, *, rebulk_day: int | None = None) -> Path:
        """Write day ``day``'s batch folder (0 = bulk) into the gateway; returns the folder."""
        from im1dev.synth import supplier

        return supplier.publish_tpp_day(world, day, self.root, rebulk_day=rebulk_day).files[0].parent

    def feed(self, feed_id: str, ods: str, *, transport: str | None = None, retries: int = 0, **extra) -> Feed:
        """Write a feeds file with one TPP feed reading this gateway and return the feed."""
        transport = transport or f"{{kind: folder, path: {self.root}}}"
        more = "".join(f"    {k}: {v}\n" for k, v in extra.items())  # keys of the feed (4 spaces in)
        text = textwrap.dedent(f"""
            version: 1
            feeds:
              - id: {feed_id}
                supplier: tpp
                transport: {transport}
                organisations: [{{ods_code: {ods}}}]
                retries: {retries}
                retry_delay_minutes: 0.005
                max_retry_delay_minutes: 0.01
        """) + more
        path = self.tmp / f"feeds_{feed_id}.yaml"
        path.write_text(text)
        self.monkeypatch.setenv("IM1_FEEDS_FILE", str(path))
        return load_config(path).feed(feed_id)


@pytest.fixture()
def gateway(tmp_path, monkeypatch, warehouse):
    root = tmp_path / "gateway"
    root.mkdir()
    return Gateway(root, tmp_path, monkeypatch, warehouse.role_url(LOADER))


def run_tpp(loader_url: str, feed: Feed, client=None, *, quality: bool = False) -> list:
    """One TPP ingest run without Airflow (:meth:`Pipeline.run_once`). Returns each batch's load
    result, or the QuarantineError (QualityError) it raised."""
    from im1.ingest.pipeline import Pipeline
    from im1.transport.folder import FolderClient

    with client or FolderClient() as c:
        return Pipeline(feed, loader_url).run_once(c, quality=quality)


def tpp_count(conn, table: str, feed_id: str, **where) -> int:
    q = f"select count(*) from raw_tpp.{table} where _feed_id = %s"  # noqa: S608 - test helper, fixed names
    args: list = [feed_id]
    for col, val in where.items():
        q += f" and {col} = %s"
        args.append(val)
    return conn.execute(q, args).fetchone()[0]
