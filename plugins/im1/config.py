"""Feed configuration: a typed, validated YAML file under ``include/`` declaring every feed.

A *feed* is one extract configuration: a supplier (EMIS or TPP), a transport, the Airflow
connection ids that hold its credentials and PGP key, and the organisations it covers.
Adding an organisation is a config change, never a code change.

Any problem is reported as :class:`FeedConfigError` naming the file, the field and the reason,
for example ``feeds[0].organisations[1].ods_code: 'Z8100' is not an ODS practice code``.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from im1 import paths

ODS_PRACTICE = re.compile(r"^[A-Z][0-9]{5}$")
BRACED_GUID = re.compile(r"^\{[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}\}$")
BARE_GUID = re.compile(r"^[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}$")
FEED_ID = re.compile(r"^[a-z][a-z0-9_]{1,62}$")
CONN_ID = re.compile(r"^[A-Za-z0-9_.-]{1,250}$")


class FeedConfigError(ValueError):
    """The feed configuration file is missing, unreadable or invalid."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Organisation(_Strict):
    ods_code: str = Field(description="ODS code of the GP practice, e.g. A81001")
    supplier_org_id: str | None = Field(
        default=None,
        description="The supplier's id for the organisation: EMIS OrganisationGuid ({GUID}); "
        "TPP IDOrganisationVisibleTo (the ODS code, the default)",
    )
    name: str | None = None

    @field_validator("ods_code")
    @classmethod
    def _ods(cls, v: str) -> str:
        if not ODS_PRACTICE.match(v):
            raise ValueError(f"{v!r} is not an ODS practice code (a capital letter then five digits, e.g. A81001)")
        return v


class SftpTransport(_Strict):
    kind: Literal["sftp"]
    host: str = Field(min_length=1)
    port: int = Field(default=22, ge=1, le=65535)
    path: str = Field(description="Remote folder listed recursively for this feed's files")
    conn_id: str = Field(description="Airflow connection with the SFTP user, private key and pinned host key")

    @field_validator("path")
    @classmethod
    def _abs(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError(f"{v!r} must be an absolute remote path starting with '/'")
        return v.rstrip("/") or "/"

    @field_validator("conn_id")
    @classmethod
    def _conn(cls, v: str) -> str:
        if not CONN_ID.match(v):
            raise ValueError(f"{v!r} is not a valid Airflow connection id")
        return v


class FolderTransport(_Strict):
    kind: Literal["folder"]
    path: str = Field(description="Local gateway folder (absolute, or relative to the project root)")

    def resolved(self) -> Path:
        p = Path(self.path)
        return p if p.is_absolute() else paths.project_root() / p


Transport = Annotated[SftpTransport | FolderTransport, Field(discriminator="kind")]


class Feed(_Strict):
    id: str = Field(description="Feed id, used in DAG ids and ledger rows (lower-case, digits, underscores)")
    supplier: Literal["emis", "tpp"]
    extract: Literal["organisation", "multi_organisation"] = "organisation"
    transport: Transport
    pgp_conn_id: str | None = Field(default=None, description="Airflow connection holding the PGP private key")
    sharing_agreement_guid: str | None = Field(
        default=None, description="EMIS sharing agreement GUID as it appears in file names (no braces)"
    )
    organisations: list[Organisation] = Field(min_length=1)
    enabled: bool = True
    schedule: str = Field(default="0 6 * * *", description="Cron expression of the daily run (in `timezone`)")
    timezone: str = "Europe/London"
    start_date: dt.date = dt.date(2025, 1, 1)
    catchup: bool = False
    retries: int = Field(default=3, ge=0, le=20)
    retry_delay_minutes: float = Field(default=5, gt=0)
    max_retry_delay_minutes: float = Field(default=60, gt=0)
    batch_deadline_hours: float = Field(
        default=6, gt=0, description="How long to wait for a complete batch before alerting"
    )
    # the defaults are im1.crypto's (not imported here: parsing the DAGs must not import gnupg)
    max_plaintext_ratio: float = Field(
        default=100, ge=1,
        description="A decrypted file may be at most this many times its encrypted size (but always "
                    "min_plaintext_limit_mb); past it gpg is stopped and the batch quarantined (a compression bomb)")
    min_plaintext_limit_mb: float = Field(
        default=64, gt=0,
        description="Plaintext every decrypted file may have whatever its ratio, in MiB")
    tags: list[str] = Field(default_factory=list)

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not FEED_ID.match(v):
            raise ValueError(f"{v!r} must start with a letter and use only a-z, 0-9 and _ (2-63 characters)")
        return v

    @field_validator("pgp_conn_id")
    @classmethod
    def _pgp(cls, v: str | None) -> str | None:
        if v is not None and not CONN_ID.match(v):
            raise ValueError(f"{v!r} is not a valid Airflow connection id")
        return v

    @field_validator("sharing_agreement_guid")
    @classmethod
    def _agreement(cls, v: str | None) -> str | None:
        if v is not None and not BARE_GUID.match(v):
            raise ValueError(f"{v!r} must be an upper-case GUID without braces, as in EMIS file names")
        return v

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{v!r} is not a known IANA time zone") from None
        return v

    @field_validator("schedule")
    @classmethod
    def _cron(cls, v: str) -> str:
        fields = v.split()
        if len(fields) != 5:
            raise ValueError(f"{v!r} is not a 5-field cron expression")
        return v

    @model_validator(mode="after")
    def _supplier_rules(self) -> Feed:
        problems: list[str] = []
        if self.supplier == "emis":
            if self.transport.kind != "sftp":
                problems.append("transport: EMIS feeds are fetched over SFTP (kind: sftp)")
            if not self.pgp_conn_id:
                problems.append("pgp_conn_id: EMIS files are PGP-encrypted; name the connection holding the key")
            if not self.sharing_agreement_guid:
                problems.append("sharing_agreement_guid: required for EMIS feeds")
            for i, org in enumerate(self.organisations):
                if not org.supplier_org_id or not BRACED_GUID.match(org.supplier_org_id):
                    problems.append(
                        f"organisations[{i}].supplier_org_id: EMIS needs the OrganisationGuid as an "
                        f"upper-case braced GUID, got {org.supplier_org_id!r}"
                    )
        else:
            if self.pgp_conn_id or self.sharing_agreement_guid:
                problems.append("pgp_conn_id/sharing_agreement_guid: only apply to EMIS feeds")
            if self.extract == "multi_organisation":
                problems.append("extract: multi_organisation is not supported for TPP feeds yet (rows are not split "
                                "by IDOrganisationVisibleTo); declare one feed per practice with extract: organisation")
            for i, org in enumerate(self.organisations):
                if org.supplier_org_id not in (None, org.ods_code):
                    problems.append(
                        f"organisations[{i}].supplier_org_id: TPP identifies organisations by ODS code "
                        f"(IDOrganisationVisibleTo); expected {org.ods_code!r} or nothing"
                    )
        if self.extract == "organisation" and len(self.organisations) != 1:
            problems.append(
                f"organisations: an organisation-specific extract covers exactly one organisation "
                f"(got {len(self.organisations)}); use extract: multi_organisation"
            )
        odss = [o.ods_code for o in self.organisations]
        dupes = sorted({o for o in odss if odss.count(o) > 1})
        if dupes:
            problems.append(f"organisations: ODS code listed twice: {', '.join(dupes)}")
        if self.max_retry_delay_minutes < self.retry_delay_minutes:
            problems.append("max_retry_delay_minutes: must be at least retry_delay_minutes")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    # -- helpers ---------------------------------------------------------------------------
    def plaintext_limit(self, encrypted_size: int) -> int:
        """The most bytes one of this feed's files of ``encrypted_size`` bytes may decrypt to."""
        from im1.crypto import plaintext_limit

        return plaintext_limit(encrypted_size, ratio=self.max_plaintext_ratio,
                               floor=int(self.min_plaintext_limit_mb * 2**20))

    @property
    def dag_id(self) -> str:
        return f"im1_ingest__{self.id}"

    def supplier_org_id(self, org: Organisation) -> str:
        return org.supplier_org_id or org.ods_code

    def organisation_by_supplier_id(self) -> dict[str, Organisation]:
        return {self.supplier_org_id(o): o for o in self.organisations}

    @property
    def pool(self) -> str:
        """One Airflow pool per supplier host, so feeds sharing a host share its connection budget."""
        if isinstance(self.transport, SftpTransport):
            host = re.sub(r"[^A-Za-z0-9_]", "_", f"{self.transport.host}_{self.transport.port}")
        else:
            host = "local_gateway"
        return f"im1_{self.supplier}_{host}"


class FeedConfig(_Strict):
    version: Literal[1] = 1
    feeds: list[Feed] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> FeedConfig:
        ids = [f.id for f in self.feeds]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"feeds: feed id used twice: {', '.join(dupes)}")
        seen: dict[tuple[str, str], str] = {}
        for f in self.feeds:
            for o in f.organisations:
                key = (f.supplier, o.ods_code)
                if key in seen:
                    raise ValueError(
                        f"feeds: organisation {o.ods_code} is in both {seen[key]!r} and {f.id!r} for {f.supplier}"
                    )
                seen[key] = f.id
        return self

    def feed(self, feed_id: str) -> Feed:
        for f in self.feeds:
            if f.id == feed_id:
                return f
        raise KeyError(f"no feed {feed_id!r} in the configuration (known: {', '.join(f.id for f in self.feeds)})")

    @property
    def enabled_feeds(self) -> list[Feed]:
        return [f for f in self.feeds if f.enabled]


def _loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("sftp", "folder", "function-after[_supplier_rules(), Feed]"):
            # discriminated-union / validator names add noise to the path
            continue
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _format(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        where = _loc(tuple(e["loc"]))
        msg = e["msg"]
        for prefix in ("Value error, ", "Assertion failed, "):
            if msg.startswith(prefix):
                msg = msg[len(prefix) :]
        if e["type"] == "extra_forbidden":
            msg = "unknown field (check the spelling)"
        elif e["type"] == "missing":
            msg = "required field is missing"
        lines.append(f"{where}: {msg}")
    return "\n  ".join(lines)


def parse_config(data: object, source: str = "<config>") -> FeedConfig:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise FeedConfigError(f"{source}: top level must be a mapping with 'version' and 'feeds'")
    try:
        return FeedConfig.model_validate(data)
    except ValidationError as err:
        raise FeedConfigError(f"{source}: invalid feed configuration:\n  {_format(err)}") from None


_ENV_REF = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)(?::-([^}]*))?\}")


def expand_env(text: str, source: str = "<config>") -> str:
    """Replace ``${NAME}`` / ``${NAME:-default}`` with environment values (as Docker Compose does)."""

    def sub(m: re.Match) -> str:
        val = os.environ.get(m.group(1))
        if val is None or val == "":
            if m.group(2) is None:
                raise FeedConfigError(f"{source}: environment variable {m.group(1)} is referenced but not set")
            return m.group(2)
        return val

    return _ENV_REF.sub(sub, text)


def load_config(path: Path | str | None = None) -> FeedConfig:
    """Load and validate the feed configuration (default ``include/feeds.yaml`` or ``$IM1_FEEDS_FILE``)."""
    p = Path(path) if path else paths.feeds_file()
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FeedConfigError(f"{p}: feed configuration file not found") from None
    text = expand_env(text, str(p))
    try:
        # libyaml when the wheel has it: ten times faster on an ICB's 1,000 feeds (parsed with every DAG file)
        data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as err:
        raise FeedConfigError(f"{p}: not valid YAML: {err}") from None
    return parse_config(data, str(p))
