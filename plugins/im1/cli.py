"""``im1``: the platform's command line.

    im1 config check [FILE]       validate a feed configuration file
    im1 ingest status [--feed ID] batches per feed/organisation: status, rows, error, freshness
    im1 ingest release BATCH_ID [--reason TEXT]   re-queue a quarantined batch for the next run
    im1 warehouse bootstrap|url   bootstrap the warehouse named by IM1_WAREHOUSE_URL (roles, schemas, ledger)

The development and demo tooling (:mod:`im1dev`, installed beside the product in a checkout, not
in the Airflow image) adds its commands through the ``im1.cli`` entry point group: ``demo``,
``airflow``, ``docs``, ``env``, ``run``, ``synth``, ``sftp-server``, ``stack``, ``dbt``, ``casebook``
and the embedded warehouse (``warehouse start|stop|status``). It also lets ``ingest`` reach the
local embedded warehouse when ``IM1_WAREHOUSE_URL`` is unset.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Callable
from importlib.metadata import entry_points

log = logging.getLogger(__name__)


def _warehouse_from_env():
    from im1.warehouse import from_env

    return contextlib.nullcontext(from_env())


# how commands reach the warehouse: IM1_WAREHOUSE_URL here; a plugin (im1dev) may start a local one
warehouse_context: Callable = _warehouse_from_env


def _cmd_config_check(a: argparse.Namespace) -> int:
    from im1.config import FeedConfigError, load_config

    try:
        cfg = load_config(a.file)
    except FeedConfigError as err:
        print(err, file=sys.stderr)
        return 2
    for f in cfg.feeds:
        orgs = ", ".join(o.ods_code for o in f.organisations)
        print(f"{f.id}: {f.supplier} {f.extract} via {f.transport.kind} -> DAG {f.dag_id} [{orgs}]"
              f"{'' if f.enabled else ' (disabled)'}")
    print(f"OK: {len(cfg.feeds)} feed(s)")
    return 0


def _cmd_warehouse(a: argparse.Namespace) -> int:
    from im1.warehouse.bootstrap import bootstrap

    with warehouse_context() as wh:
        if a.action == "bootstrap":
            bootstrap(wh)
            print(f"bootstrapped {wh.database} on {wh.host}:{wh.port}")
        else:
            print(wh.admin_url)
    return 0


def _cmd_ingest(a: argparse.Namespace) -> int:
    import psycopg

    from im1.ingest import ledger, status
    from im1.warehouse import LOADER

    with warehouse_context() as wh, psycopg.connect(wh.role_url(LOADER)) as conn:
        if a.action == "status":
            print(status.format_status(conn, feed_id=a.feed, limit=a.limit, problems_only=a.problems))
            if a.docs:
                from im1.ingest.quality import data_docs_index

                print(f"\nGreat Expectations Data Docs: {data_docs_index()}")
            return 0
        try:
            print(status.release(conn, a.batch_id, a.reason))
        except ledger.ReleaseError as err:
            print(f"cannot release: {err}", file=sys.stderr)
            return 2
    return 0


def _plugins() -> list:
    """The ``im1.cli`` entry points that can be loaded (im1dev in a checkout; none in the image)."""
    out = []
    for ep in entry_points(group="im1.cli"):
        try:
            out.append(ep.load())
        except ImportError as err:  # the tooling package is not installed (the Airflow image)
            log.debug("im1 CLI plugin %s not available: %s", ep.name, err)
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="im1", description="IM1 bulk-extract platform")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)
    taken: set[str] = set()
    for register in _plugins():
        taken |= set(register(sys.modules[__name__], sub))

    c = sub.add_parser("config", help="feed configuration")
    csub = c.add_subparsers(dest="action", required=True)
    cc = csub.add_parser("check", help="validate a feed configuration file")
    cc.add_argument("file", nargs="?")
    cc.set_defaults(func=_cmd_config_check)

    ing = sub.add_parser("ingest", help="the ingest ledger: status of batches, release of quarantined ones")
    isub = ing.add_subparsers(dest="action", required=True)
    st = isub.add_parser("status", help="batches per feed and organisation: status, rows, error, freshness")
    st.add_argument("--feed", help="only this feed id")
    st.add_argument("--limit", type=int, default=5, help="batches shown per feed and organisation (default 5)")
    st.add_argument("--problems", action="store_true", help="only batches that are not loaded")
    st.add_argument("--docs", action="store_true", help="also print where the GX Data Docs are")
    st.set_defaults(func=_cmd_ingest)
    rel = isub.add_parser("release", help="re-queue a quarantined batch so the next run loads it")
    rel.add_argument("batch_id", type=int, help="ingest.batches.batch_id (see `im1 ingest status`)")
    rel.add_argument("--reason", help="why it may be loaded now (kept in the ledger)")
    rel.set_defaults(func=_cmd_ingest)

    if "warehouse" not in taken:
        w = sub.add_parser("warehouse", help="bootstrap the warehouse named by IM1_WAREHOUSE_URL")
        w.add_argument("action", choices=["bootstrap", "url"])
        w.set_defaults(func=_cmd_warehouse)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("paramiko").setLevel(logging.WARNING)
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
