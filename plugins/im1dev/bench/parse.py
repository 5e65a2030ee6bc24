"""``make bench-parse``: how long Airflow takes to parse the DAG folder for 1, 50, 200 and 1,000 feeds.

An ICB runs one feed per practice (or per multi-organisation extract). Airflow's DAG processor
parses each DAG file in a child process and gives up on a file after ``dagbag_import_timeout``
(30 s by default): every DAG in it then vanishes from the UI. This benchmark writes a synthetic
feeds file of N feeds (mostly EMIS organisation extracts, some SystmOne practices, a few EMIS
multi-organisation extracts of five practices), then, in a fresh interpreter per N that has
imported Airflow already (as the processor's child has), times what the processor does per file:
``DagBag`` over each of ``dags/*.py``, then serializing every DAG it holds. Printed per N: each
file's time (parse + serialization), the total and the
number of DAGs; the last line is ``parse 1000 feeds: <seconds> s (target < 10 s; 200 feeds < 2 s)``.

Run several times on a busy machine and the numbers move; compare numbers from one run only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from im1 import paths

SIZES = (1, 50, 200, 1000)

PROBE = textwrap.dedent("""
    import json, sys, time
    t0 = time.perf_counter()
    import airflow.sdk  # noqa: F401 - the DAG processor's child has Airflow imported already
    from airflow.dag_processing.dagbag import DagBag
    from airflow.serialization.serialized_objects import DagSerialization
    warm = time.perf_counter() - t0
    out = {"airflow_import_s": round(warm, 3), "files": {}}
    for f in sys.argv[1:]:
        t = time.perf_counter()
        bag = DagBag(dag_folder=f, safe_mode=False)
        parsed = time.perf_counter() - t
        for dag in bag.dags.values():  # the processor serializes every DAG it parsed, in the same child
            DagSerialization.to_dict(dag)
        out["files"][f.rsplit("/", 1)[-1]] = {
            "seconds": round(time.perf_counter() - t, 3), "parse": round(parsed, 3), "dags": len(bag.dags),
            "errors": {k.rsplit("/", 1)[-1]: v.splitlines()[-1] for k, v in bag.import_errors.items()}}
    print(json.dumps(out))
""")


def feeds_yaml(n: int) -> str:
    """N feeds as an ICB would write them: ~80% EMIS practices, ~15% SystmOne practices, ~5% EMIS
    multi-organisation extracts of five practices each."""
    lines = ["version: 1", "feeds:"]
    ods = 0
    for i in range(n):
        kind = "multi" if i % 20 == 19 else "tpp" if i % 7 == 6 else "emis"
        if kind == "tpp":
            ods += 1
            lines += [f"  - id: tpp_{i:04d}", "    supplier: tpp",
                      f"    transport: {{kind: folder, path: /srv/tpp/gateway_{i:04d}}}",
                      f"    organisations: [{{ods_code: Y{ods:05d}}}]"]
            continue
        agreement = f"{i:08X}-0000-4000-8000-000000000000"
        orgs = []
        for _ in range(5 if kind == "multi" else 1):
            ods += 1
            orgs.append(f"{{ods_code: Y{ods:05d}, supplier_org_id: '{{{ods:08X}-1111-4111-8111-111111111111}}'}}")
        lines += [f"  - id: emis_{i:04d}", "    supplier: emis",
                  f"    extract: {'multi_organisation' if kind == 'multi' else 'organisation'}",
                  f"    transport: {{kind: sftp, host: sftp{i % 3}.example.invalid, path: /IM1/{agreement[:8]}, "
                  f"conn_id: im1_sftp_{i:04d}}}",
                  f"    pgp_conn_id: im1_pgp_{i:04d}", f"    sharing_agreement_guid: {agreement}",
                  f"    organisations: [{', '.join(orgs)}]"]
    return "\n".join(lines) + "\n"


def measure(n: int, work: Path) -> dict:
    feeds = work / f"feeds_{n}.yaml"
    feeds.write_text(feeds_yaml(n))
    env = dict(os.environ, IM1_FEEDS_FILE=str(feeds), IM1_STATE_DIR=str(work / "state"))
    files = sorted(str(p) for p in paths.dags_dir().glob("*.py"))
    res = subprocess.run([sys.executable, "-c", PROBE, *files], capture_output=True, text=True, env=env,
                         cwd=paths.project_root(), check=False)
    if res.returncode:
        raise SystemExit(f"parse probe failed for {n} feeds:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="*", default=list(SIZES))
    args = ap.parse_args(argv)
    totals = {}
    with tempfile.TemporaryDirectory(prefix="im1-bench-parse-") as tmp:
        for n in args.sizes:
            got = measure(n, Path(tmp))
            total = sum(f["seconds"] for f in got["files"].values())
            dags = sum(f["dags"] for f in got["files"].values())
            errors = {k: v["errors"] for k, v in got["files"].items() if v["errors"]}
            per = ", ".join(f"{k} {v['seconds']:.2f} s ({v['dags']} DAGs)" for k, v in got["files"].items())
            print(f"{n:>5} feeds: {total:6.2f} s for {dags} DAGs  [{per}]", flush=True)
            if errors:
                print(f"       import errors: {errors}")
                return 1
            totals[n] = total
    if 200 in totals:
        print(f"parse 200 feeds: {totals[200]:.2f} s (target < 2 s)")
    if 1000 in totals:
        print(f"parse 1000 feeds: {totals[1000]:.2f} s (target < 10 s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
