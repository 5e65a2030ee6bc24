"""Reading docker-compose.yaml and .env.example as docker-compose does (for the stack tests)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yaml"
ENV_EXAMPLE = ROOT / ".env.example"
# a compose variable; $${X} is an escaped dollar (the container's own variable), not one of ours
VAR = re.compile(r"(?<!\$)\$\{([A-Z_][A-Z0-9_]*)(:?[-?][^}]*)?\}")


def load() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def env_example() -> dict[str, str]:
    out = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def interpolate(value: str, values: dict[str, str]) -> str:
    """Compose's interpolation: ${VAR}, ${VAR:-default}, ${VAR:?error}; $$ is a literal $."""

    def sub(m: re.Match) -> str:
        name, mod = m.group(1), m.group(2) or ""
        val = values.get(name, "")
        if val == "" and mod.startswith(":-"):
            return mod[2:]
        if val == "" and mod.startswith(":?"):
            raise AssertionError(f"{name} is required: {mod[2:]}")
        return val

    return VAR.sub(sub, value).replace("$$", "$")


def service_env(name: str) -> dict[str, str]:
    """The environment docker-compose gives service ``name`` with the values of .env.example."""
    values = env_example()
    env = load()["services"][name].get("environment") or {}
    return {k: interpolate(str(v), values) for k, v in env.items()}


def service_script(name: str) -> str:
    """The shell script of a ``bash -c`` service command, interpolated."""
    return interpolate(load()["services"][name]["command"][-1], env_example())
