"""The development and demo commands of the ``im1`` CLI (registered through the ``im1.cli`` entry point).

    im1 demo                      the whole platform end to end on synthetic data (make demo)
    im1 airflow                   local Airflow UI + scheduler over the same state (make airflow)
    im1 docs                      build the dbt docs and GX Data Docs and serve them (make docs)
    im1 warehouse start|stop|status|bootstrap|url   the local embedded PostgreSQL
    im1 env                       print the environment (eval "$(im1 env)") for airflow/dbt by hand
    im1 run -- CMD ...            run CMD in that environment, with the warehouse up
    im1 synth --out DIR ...       synthetic EMIS/TPP deliveries over several days, with ground truth
    im1 sftp-server ...           serve a folder over SFTP (the demo's supplier site)
    im1 stack init|metabase-setup the Docker Compose stack's one-shot jobs (docker-compose.yaml)
    im1 dbt gen                   regenerate dbt sources and EMIS staging models from include/specs
    im1 casebook gen|list         compile the QOF casebook (dbt_project/casebook) into dbt unit tests; list cases
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
from pathlib import Path


def _cmd_demo(a: argparse.Namespace) -> int:
    from im1dev.demo import run_demo

    return run_demo(days=a.days, patients=a.patients, seed=a.seed)


def _cmd_warehouse(a: argparse.Namespace) -> int:
    from im1.warehouse.bootstrap import bootstrap
    from im1dev import runtime

    if os.environ.get("IM1_WAREHOUSE_URL") and a.action in ("start", "stop"):
        print("IM1_WAREHOUSE_URL is set: the embedded server is not used", file=sys.stderr)
        return 2
    srv = runtime.embedded_server()
    if a.action == "start":
        started = srv.ensure_started()
        print(f"embedded PostgreSQL {'started' if started else 'already running'} on 127.0.0.1:{srv.port}")
    elif a.action == "stop":
        srv.stop()
        print("embedded PostgreSQL stopped")
    elif a.action == "status":
        if os.environ.get("IM1_WAREHOUSE_URL"):
            print("using IM1_WAREHOUSE_URL")
        else:
            print(f"embedded PostgreSQL in {srv.data_dir}: {'running' if srv.is_running() else 'stopped'}")
    elif a.action == "bootstrap":
        with runtime.warehouse_up() as wh:
            bootstrap(wh)
            print(f"bootstrapped {wh.database} on {wh.host}:{wh.port}")
    elif a.action == "url":
        with runtime.warehouse_up() as wh:
            print(wh.admin_url)
    return 0


def _cmd_env(a: argparse.Namespace) -> int:
    from im1dev import runtime

    env = runtime.local_env(runtime.configured_warehouse(), base={})
    for k in sorted(env):
        if k == "PATH":
            continue
        print(f"export {k}={shlex.quote(env[k])}")
    return 0


def _cmd_run(a: argparse.Namespace) -> int:
    from im1dev import runtime

    cmd = a.cmd[1:] if a.cmd and a.cmd[0] == "--" else a.cmd
    if not cmd:
        print("usage: im1 run -- CMD [ARGS...]", file=sys.stderr)
        return 2
    with runtime.warehouse_up() as wh:
        from im1.warehouse.bootstrap import bootstrap, ensure_database

        bootstrap(wh)
        ensure_database(wh, "airflow")
        return runtime.run(cmd, runtime.local_env(wh), check=False).returncode


def _cmd_airflow(a: argparse.Namespace) -> int:
    from im1dev.airflow_local import run_local_airflow

    return run_local_airflow(port=a.port)


def _cmd_docs(a: argparse.Namespace) -> int:
    from im1dev.docs import run_docs

    return run_docs(port=a.port, host=a.host, build=not a.no_build)


def _cmd_sftp_server(a: argparse.Namespace) -> int:
    from im1dev.sftp_server import SftpServer, load_private_key, load_public_key

    server = SftpServer(
        Path(a.root),
        host_key=load_private_key(a.host_key),
        username=a.user,
        authorized_keys=[load_public_key(k) for k in a.authorized_key],
        host=a.host,
        port=a.port,
    )
    print(f"serving {a.root} over SFTP on {a.host}:{server.port} (host key {server.host_key_line[:40]}...)",
          flush=True)
    def _stop(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


def _cmd_synth(a: argparse.Namespace) -> int:
    import datetime as dt
    import time

    from im1.crypto import Keyring
    from im1dev.synth import supplier
    from im1dev.synth.world import build_world

    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    start = dt.date.fromisoformat(a.start)
    t0 = time.monotonic()
    total_rows = 0
    kr = None
    recipient = None
    if not a.no_encrypt:
        kr = Keyring(cache_passphrase=True)
        if a.recipient_key:
            recipient = kr.import_key(Path(a.recipient_key).read_text())[0]
        else:
            keys = out / "keys"
            keys.mkdir(mode=0o700, exist_ok=True)
            kp = kr.generate("IM1 synthetic consumer", "synthetic-consumer@example.invalid", "synthetic")
            for name, text in (("consumer_public.asc", kp.public_armored), ("consumer_secret.asc", kp.secret_armored),
                               ("passphrase", kp.passphrase)):
                (keys / name).write_text(text)
                (keys / name).chmod(0o600)
            recipient = kp.fingerprint
            print(f"generated a demo consumer key pair in {keys} (passphrase in {keys / 'passphrase'})")
    feed = None
    if a.feed:
        from im1.config import FeedConfigError, load_config
        from im1dev import demo

        try:
            feed = load_config().feed(a.feed)
        except (FeedConfigError, KeyError) as err:
            print(f"--feed {a.feed}: {err}", file=sys.stderr)
            return 2
        if feed.supplier == "tpp" and feed.transport.kind != "folder":
            print(f"--feed {a.feed}: TPP feeds are played into a gateway folder (transport kind: folder)",
                  file=sys.stderr)
            return 2
    try:
        suppliers = ["emis", "tpp"] if a.supplier == "both" else [a.supplier]
        if feed is not None:
            suppliers = [feed.supplier]
        for sup in suppliers:
            if feed is not None:
                # the feed's own identities (ODS codes, organisation GUIDs, sharing agreement), so the
                # platform configured with that feed loads what is generated
                worlds = [demo.world_for(feed, days=a.days, patients=a.patients, seed=a.seed, start=start,
                                         years=a.years, volume=a.volume)]
            elif sup == "emis":
                groups = [None] if (a.multi_org or a.practices == 1) else list(range(a.practices))
                worlds = [
                    build_world(seed=a.seed + (g or 0), practices=a.practices if g is None else 1,
                                ods_codes=None if g is None else [f"Z{90001 + g:05d}"],
                                patients_per_practice=a.patients, start=start, days=a.days, years=a.years,
                                volume=a.volume, inactive_practices=a.inactive, supplier="emis")
                    for g in groups
                ]
            else:
                worlds = [build_world(seed=a.seed + 1000, practices=a.practices, patients_per_practice=a.patients,
                                      start=start, days=a.days, years=a.years, volume=a.volume, supplier="tpp",
                                      ods_codes=[f"Z{91001 + i:05d}" for i in range(a.practices)])]
            for world in worlds:
                for day in range(a.days):
                    if sup == "emis":
                        feed_dir = (out / feed.transport.path.strip("/")) if feed is not None \
                            else supplier.emis_feed_dir(out, world)
                        if day == 0 and a.patients * a.practices >= 2000 and not a.legacy_names and a.version == "8.2":
                            pub = supplier.write_emis_bulk(world, feed_dir, keyring=kr, recipient=recipient,
                                                           workers=a.workers)
                        else:
                            pub = supplier.publish_emis_day(world, day, feed_dir, keyring=kr, recipient=recipient,
                                                            legacy_names=a.legacy_names, version=a.version)
                    else:
                        # a TPP feed's deliveries go into the gateway folder it reads
                        gateway = feed.transport.resolved() if feed is not None else out / "tpp"
                        gateway.mkdir(parents=True, exist_ok=True)
                        pub = supplier.publish_tpp_day(world, day, gateway, rebulk_day=a.rebulk_day)
                    rows = sum(pub.rows.values())
                    total_rows += rows
                    print(f"{sup} {world.practices[0].ods_code}{'+' if len(world.practices) > 1 else ''} "
                          f"day {day} ({pub.data_date}): {len(pub.files)} files, {rows} rows in {pub.seconds:.1f}s")
                    if not a.no_truth:
                        supplier.write_truth(world, day, out / "truth" / sup)
    finally:
        if kr is not None:
            kr.close()
    secs = time.monotonic() - t0
    print(f"done: {total_rows} rows in {secs:.1f}s ({total_rows / max(secs, 1e-9):,.0f} rows/s) -> {out}")
    return 0


def _cmd_dbt(a: argparse.Namespace) -> int:
    from im1dev import dbtgen

    if a.action in ("gen", "gen-sources", "gen-staging"):
        for p in dbtgen.write_all():
            print(f"wrote {p}")
    return 0


def _cmd_casebook(a: argparse.Namespace) -> int:
    from im1dev.synth import casebook

    if a.action == "gen":
        print(f"wrote {casebook.write_unit_tests()}")
        return 0
    for c in casebook.load().cases:
        flags = ("" if c.plantable else " [unit test only]") + (" [ambiguous]" if c.ambiguous else "")
        print(f"{c.area:<10} {c.id:<45} {c.citation}{flags}")
    return 0


def _cmd_stack(a: argparse.Namespace) -> int:
    from im1dev import stack

    if a.action == "init":
        return stack.init(supplier_dir=Path(a.supplier_dir) if a.supplier_dir else None,
                          databases=a.database or [], pool_slots=a.pool_slots)
    try:
        stack.metabase_setup(stack.MetabaseSettings.from_env(), wait=a.wait)
    except stack.MetabaseError as err:
        print(f"Metabase set-up failed: {err}", file=sys.stderr)
        return 1
    return 0


def register(cli, sub) -> list[str]:
    """Add the development commands to the product CLI's parser; the embedded warehouse stands in
    for IM1_WAREHOUSE_URL when it is unset. Returns the command names it provides."""
    from im1dev import runtime

    cli.warehouse_context = runtime.warehouse_up

    d = sub.add_parser("demo", help="run the platform end to end on synthetic data")
    d.add_argument("--days", type=int, default=int(os.environ.get("IM1_DEMO_DAYS", "3")),
                   help="days of deliveries: a bulk, then daily deltas")
    d.add_argument("--patients", type=int, default=int(os.environ.get("IM1_DEMO_PATIENTS", "300")))
    d.add_argument("--seed", type=int, default=42)
    d.set_defaults(func=_cmd_demo)

    w = sub.add_parser("warehouse", help="the embedded PostgreSQL / warehouse bootstrap")
    w.add_argument("action", choices=["start", "stop", "status", "bootstrap", "url"])
    w.set_defaults(func=_cmd_warehouse)

    e = sub.add_parser("env", help="print the local environment as shell exports")
    e.set_defaults(func=_cmd_env)

    r = sub.add_parser("run", help="run a command in the local environment with the warehouse up")
    r.add_argument("cmd", nargs=argparse.REMAINDER)
    r.set_defaults(func=_cmd_run)

    af = sub.add_parser("airflow", help="local Airflow UI and scheduler over the demo's state")
    af.add_argument("--port", type=int, default=int(os.environ.get("IM1_AIRFLOW_PORT", "8080")))
    af.set_defaults(func=_cmd_airflow)

    dc = sub.add_parser("docs", help="build the dbt docs (and GX Data Docs) and serve them on a local port")
    dc.add_argument("--port", type=int, default=int(os.environ.get("IM1_DOCS_PORT", "8081")))
    dc.add_argument("--host", default="127.0.0.1")
    dc.add_argument("--no-build", action="store_true", help="serve what is there without building")
    dc.set_defaults(func=_cmd_docs)

    s = sub.add_parser("sftp-server", help="serve a folder over SFTP (key auth, fixed host key)")
    s.add_argument("--root", required=True)
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=2222)
    s.add_argument("--host-key", required=True, help="server private key file")
    s.add_argument("--user", required=True)
    s.add_argument("--authorized-key", action="append", required=True,
                   help="a client public key file (OpenSSH line) allowed to log in; repeatable")
    s.set_defaults(func=_cmd_sftp_server)

    sy = sub.add_parser("synth", help="generate synthetic EMIS/TPP deliveries with ground truth")
    sy.add_argument("--out", required=True, help="output folder")
    sy.add_argument("--supplier", choices=["emis", "tpp", "both"], default="both")
    sy.add_argument("--feed", help="play this configured feed: its ODS codes, organisation GUIDs and agreement; "
                                   "EMIS files under <out>/<the feed's SFTP path>, TPP batches into the feed's "
                                   "gateway folder")
    sy.add_argument("--practices", type=int, default=1)
    sy.add_argument("--patients", type=int, default=300, help="patients per practice")
    sy.add_argument("--days", type=int, default=3, help="day 0 is the bulk, then daily deltas")
    sy.add_argument("--years", type=float, default=5.0, help="years of clinical history")
    sy.add_argument("--volume", type=float, default=1.0, help="1.0 = realistic EMIS volumes per patient-year")
    sy.add_argument("--seed", type=int, default=42)
    sy.add_argument("--start", default="2026-11-01", help="data date of the bulk")
    sy.add_argument("--multi-org", action="store_true", help="EMIS: one sharing agreement for all practices")
    sy.add_argument("--inactive", type=int, default=1, help="EMIS: agreement members that are not activated")
    sy.add_argument("--legacy-names", action="store_true", help="EMIS: legacy 5-part file names")
    sy.add_argument("--version", choices=["8.2", "8.0"], default="8.2", help="EMIS spec version")
    sy.add_argument("--recipient-key", help="consumer's armored PGP public key (default: generate a pair)")
    sy.add_argument("--no-encrypt", action="store_true")
    sy.add_argument("--rebulk-day", type=int, help="TPP: re-send SRCode in full on this day")
    sy.add_argument("--no-truth", action="store_true")
    sy.add_argument("--workers", type=int, default=None, help="processes for large EMIS bulks (default 2)")
    sy.set_defaults(func=_cmd_synth)

    sk = sub.add_parser("stack", help="one-shot jobs of the Docker Compose stack (docker-compose.yaml)")
    sksub = sk.add_subparsers(dest="action", required=True)
    si = sksub.add_parser("init", help="bootstrap the warehouse, migrate Airflow, pools, demo keys and connections")
    si.add_argument("--supplier-dir", help="the mock supplier's folder: gets its SSH host key, the authorised "
                                           "client key and the consumer's PGP public key")
    si.add_argument("--database", action="append",
                    help="also create this database on the Airflow metadata server (repeatable)")
    si.add_argument("--pool-slots", type=int, default=int(os.environ.get("IM1_POOL_SLOTS", "4")),
                    help="slots of each supplier-host pool (default 4, or IM1_POOL_SLOTS)")
    si.set_defaults(func=_cmd_stack)
    sm = sksub.add_parser("metabase-setup", help="first Metabase admin + the warehouse connection as bi_reader")
    sm.add_argument("--wait", type=float, default=600, help="seconds to wait for Metabase to be healthy")
    sm.set_defaults(func=_cmd_stack)

    db = sub.add_parser("dbt", help="dbt helpers")
    db.add_argument("action", choices=["gen", "gen-sources", "gen-staging"])
    db.set_defaults(func=_cmd_dbt)

    cb = sub.add_parser("casebook", help="the QOF casebook: compile it into dbt unit tests, or list its cases")
    cb.add_argument("action", choices=["gen", "list"])
    cb.set_defaults(func=_cmd_casebook)
    return ['demo', 'warehouse', 'env', 'run', 'airflow', 'docs', 'sftp-server', 'synth', 'stack', 'dbt', 'casebook']
