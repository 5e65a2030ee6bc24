"""Where things live: the project tree and the git-ignored runtime state folder."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Iterator
from pathlib import Path


def project_root() -> Path:
    """The repository root (``IM1_PROJECT_ROOT`` overrides; otherwise two levels above this package)."""
    env = os.environ.get("IM1_PROJECT_ROOT")
    if env:
        return Path(env).resolve()
    return Path(__file__).resolve().parents[2]


def state_dir() -> Path:
    """Runtime state (embedded PostgreSQL, Airflow home, demo keys, archive, work folders).

    Defaults to ``<project>/.im1``, which is git-ignored; ``IM1_STATE_DIR`` overrides.
    """
    env = os.environ.get("IM1_STATE_DIR")
    return Path(env).resolve() if env else project_root() / ".im1"


def include_dir() -> Path:
    return project_root() / "include"


def specs_dir() -> Path:
    return include_dir() / "specs"


def dbt_project_dir() -> Path:
    return Path(os.environ.get("IM1_DBT_PROJECT_DIR", project_root() / "dbt_project")).resolve()


def dags_dir() -> Path:
    return project_root() / "dags"


def feeds_file() -> Path:
    """The feed configuration file (``IM1_FEEDS_FILE`` overrides ``include/feeds.yaml``)."""
    env = os.environ.get("IM1_FEEDS_FILE")
    return Path(env).resolve() if env else include_dir() / "feeds.yaml"


def docs_dir() -> Path:
    """Generated documentation sites served to operators (``dbt/``: dbt docs; GX Data Docs stay in the GX project)."""
    return state_dir() / "docs"


def dbt_docs_dir() -> Path:
    """Where the transform DAG's ``dbt docs generate`` writes the dbt docs site (index.html, static_index.html)."""
    return docs_dir() / "dbt"


def lineage_dir() -> Path:
    """The default OpenLineage file transport writes one JSON event per file here."""
    return state_dir() / "lineage"


def private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) readable by the owner only; returns it."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


@contextlib.contextmanager
def owner_only() -> Iterator[None]:
    """Files and folders created in the block (by us or by a library: GX, dbt docs) are the owner's
    alone (umask 077: files 0600, folders 0700). The umask is the process's, restored afterwards."""
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


# -- local names for names a supplier chose ----------------------------------------------------------
#
# Batch folders and files are named by whoever writes into the landing place. Their local names
# (the archive folder of a batch, an archived file and its ``.part``) and the ledger key of a batch
# must be one-to-one with what they stand for, and short enough for the file system (NAME_MAX is
# 255 bytes per name) and the ledger. A name that is plain and short enough is used as it is; any
# other gets a readable ASCII prefix, ``~`` and 32 hex digits of the SHA-256 of the whole name (plus
# its extension, for files). A plain name never ends like that, so two different names never meet.

NAME_MAX = 255
PARTIAL_SUFFIX = ".part"  # a download in progress is <local name>.part beside it
LOCAL_NAME_MAX = 240  # bytes: room for a suffix such as ".part" within NAME_MAX
KEY_MAX = 200  # characters of a ledger batch key
_HASH_HEX = 32
_EXT = re.compile(r"(?:\.[A-Za-z0-9]{1,10}){1,2}\Z")
_HASHED = re.compile(rf"~[0-9a-f]{{{_HASH_HEX}}}(?:\.[A-Za-z0-9]{{1,10}}){{0,2}}\Z")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_UNSAFE_PREFIX = re.compile(r"[^A-Za-z0-9._-]+")


def _text(name: str) -> bool:
    """Valid Unicode text without control characters (a name read from disk may carry undecodable
    bytes as surrogates; the ledger stores UTF-8 only)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return not _CONTROL.search(name)


def _hashed(name: str, budget: int, ext: str = "") -> str:
    digest = hashlib.sha256(os.fsencode(name)).hexdigest()[:_HASH_HEX]
    readable = _UNSAFE_PREFIX.sub("_", name.replace("/", "__"))
    if ext and readable.endswith(ext):
        readable = readable[: -len(ext)]
    room = budget - len(ext) - 1 - _HASH_HEX
    return f"{readable[:room]}~{digest}{ext}"


def local_name(name: str) -> str:
    """The local file or folder name for a supplier-chosen ``name`` (a file name or a batch key):
    ``name`` itself when it is plain text, one path component and at most LOCAL_NAME_MAX bytes;
    otherwise a bounded, collision-free name that keeps a readable prefix and the extension."""
    plain = (_text(name) and "/" not in name and name not in ("", ".", "..")
             and len(os.fsencode(name)) <= LOCAL_NAME_MAX and not _HASHED.search(name)
             and not name.endswith(PARTIAL_SUFFIX))  # never another file's partial download
    if plain:
        return name
    m = _EXT.search(name) if _text(name) else None
    return _hashed(name, LOCAL_NAME_MAX, m.group(0) if m else "")


def bounded_key(key: str) -> str:
    """A ledger batch key for a supplier-chosen ``key`` (e.g. a batch folder's path under the
    gateway): ``key`` itself when it is plain text of at most KEY_MAX characters; otherwise a
    collision-free key of at most KEY_MAX characters that starts like it."""
    if _text(key) and len(key) <= KEY_MAX and not _HASHED.search(key):
        return key
    digest = hashlib.sha256(os.fsencode(key)).hexdigest()[:_HASH_HEX]
    readable = key if _text(key) else _UNSAFE_PREFIX.sub("_", key)
    return f"{readable[: KEY_MAX - 1 - _HASH_HEX]}~{digest}"
