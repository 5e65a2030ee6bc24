"""The Airflow image installs exactly the lock (requirements.txt), gpg, and nothing unpinned."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit  # no service: `make test-unit` runs it

ROOT = Path(__file__).resolve().parents[2]


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        buf += (" " if buf else "") + line.rstrip("\\").strip()
        if not line.endswith("\\"):
            word, _, rest = buf.partition(" ")
            out.append((word.upper(), rest.strip()))
            buf = ""
    return out


def run_commands() -> list[str]:
    cmds = []
    for word, args in instructions():
        if word == "RUN":
            cmds += [c.strip() for c in re.split(r"&&|;", args) if c.strip()]
    return cmds


def test_base_image_is_python_312_slim_bookworm():
    froms = [a for w, a in instructions() if w == "FROM"]
    assert froms == ["python:3.12-slim-bookworm AS platform", "platform AS tools"]
    assert ">=3.11,<3.13" in (ROOT / "pyproject.toml").read_text()  # 3.12 is within the lock's range


def test_gpg_comes_from_debian():
    apt = [c for c in run_commands() if c.startswith("apt-get install")]
    assert apt and "gnupg" in shlex.split(apt[0])
    assert "--no-install-recommends" in apt[0]


def test_python_packages_are_exactly_the_lock():
    cmds = run_commands()
    syncs = [c for c in cmds if re.search(r"\buv pip sync\b", c)]
    assert len(syncs) == 1 and shlex.split(syncs[0])[-1] == "requirements.txt", syncs
    installs = [c for c in cmds if re.search(r"\bpip install\b", c)]
    assert installs, "the project itself is installed"
    for c in installs:
        args = shlex.split(c)
        # never resolve anything: the lock is already complete
        assert "--no-deps" in args, f"{c!r} may pull unpinned dependencies"
        assert "-r" not in args and "--requirement" not in args, c
        targets = [a for a in args[args.index("install") + 1:] if not a.startswith("-")
                   and a not in ("/opt/venv/bin/python",)]
        for t in targets:
            # the project itself, or uv pinned to the lock's own version
            assert t == "." or t == "$(grep -E '^uv==' requirements.txt)", f"unpinned install of {t!r}"
    assert not [c for c in cmds if re.search(r"\bpip (download|wheel)\b|easy_install|poetry|conda", c)]
    lock = (ROOT / "requirements.txt").read_text()
    assert re.search(r"^uv==[0-9.]+$", lock, re.M), "uv is pinned in the lock"


def test_the_lock_is_copied_before_the_project_and_synced_into_a_venv_on_path():
    ins = instructions()
    copies = [a for w, a in ins if w == "COPY"]
    assert copies[0].split()[0] == "requirements.txt"
    env = " ".join(a for w, a in ins if w == "ENV")
    assert "PATH=/opt/venv/bin:$PATH" in env
    assert "IM1_STATE_DIR=/var/lib/im1" in env
    sync = next(c for c in run_commands() if "uv pip sync" in c)
    assert "--python /opt/venv/bin/python" in sync


def test_manifest_is_built_in_the_image_and_it_runs_unprivileged():
    cmds = run_commands()
    assert any("dbt parse" in c for c in cmds)
    users = [a for w, a in instructions() if w == "USER"]
    assert users and users[-1] not in ("root", "0")
    entry = [a for w, a in instructions() if w == "ENTRYPOINT"]
    assert entry and "tini" in entry[0]  # PID 1 reaps the worker's children


def test_compose_builds_this_image_for_every_platform_service():
    import yaml

    compose = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())
    for name, svc in compose["services"].items():
        if name in ("postgres", "warehouse", "redis", "metabase"):
            continue
        assert svc["build"]["dockerfile"] == "Dockerfile", name


def test_the_platform_image_ships_the_product_without_the_tooling():
    """The default (platform) stage drops plugins/im1dev before installing the project; only the
    tools stage (one-shot jobs, mock supplier) adds it back."""
    stages: dict[str, list[str]] = {}
    current = None
    for word, args in instructions():
        if word == "FROM":
            current = args.split()[-1]
            stages[current] = []
        elif word == "RUN":
            stages[current] += [c.strip() for c in re.split(r"&&|;", args) if c.strip()]
    platform = stages["platform"]
    drop = platform.index("rm -rf /opt/im1/plugins/im1dev")
    install = next(i for i, c in enumerate(platform) if re.search(r"\bpip install\b.* -e \.$", c))
    assert drop < install
    copies = [a for w, a in instructions() if w == "COPY"]
    assert copies[-1] == "plugins/im1dev /opt/im1/plugins/im1dev"
