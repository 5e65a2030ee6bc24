"""EMIS v8.2 deliveries from the simulated world, in the real delivery format.

Every field is double-quoted (header too), lines end in CRLF, text is UTF-8, GUIDs are braced
upper case, booleans are ``true``/``false`` and dates ISO. Each table is one file named with the
current 6-part pattern (legacy 5-part on request), PGP-encrypted (compressed) to the consumer's
public key, under ``{feed folder}/{yyyyMMdd}/``; on the supplier's SFTP site the feed folder is
``.../IM1/sftp/{sharing agreement GUID}``.
"""

from __future__ import annotations

import csv
import datetime as dt
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from im1 import emis, specs
from im1.crypto import Keyring
from im1.synth.world import Patient, World

TRUE, FALSE = "true", "false"


def _b(v: bool) -> str:
    return TRUE if v else FALSE


def _d(v: dt.date | None) -> str:
    return v.isoformat() if v else ""


def write_csv(path: Path, columns: list[str], rows: Iterable[dict]) -> int:
    """Write an EMIS-style CSV (all fields quoted, CRLF, UTF-8). Returns the number of data rows."""
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, quoting=csv.QUOTE_ALL, lineterminator="\r\n")
        w.writerow(columns)
        for r in rows:
            w.writerow([r.get(c, "") for c in columns])
            n += 1
    return n


def _patient_row(p: Patient, pid: int) -> dict:
    return {
        "PatientGuid": p.patient_guid,
        "OrganisationGuid": p.org_guid,
        "UsualGpUserInRoleGuid": p.usual_gp_guid or "",
        "Sex": p.sex,
        "DateOfBirth": _d(p.dob),
        "DateOfDeath": _d(p.death_date),
        "Title": p.title,
        "GivenName": p.given,
        "MiddleNames": p.middle,
        "Surname": p.surname,
        "DateOfRegistration": _d(p.reg_date),
        "NhsNumber": p.nhs_number,
        "PatientNumber": str(p.patient_number),
        "PatientTypeDescription": "Dummy" if p.dummy else p.reg_type,
        "DummyType": _b(p.dummy),
        "HouseNameFlatNumber": p.house,
        "NumberAndStreet": p.street,
        "Town": p.town,
        "Postcode": p.postcode.replace(" ", "")[:7],
        "NHSNumberStatus": "01",
        "PersonGuid": p.person_guid,
        "DateofDeactivation": _d(p.dereg_date),
        "Deleted": FALSE,
        "SpineSensitive": _b(p.spine_sensitive),
        "IsConfidential": _b(p.confidential),
        "ProcessingId": str(pid),
    }


def snapshot(world: World, on: dt.date) -> dict[str, list[dict]]:
    """The full content of every EMIS table as the supplier would extract it on ``on``."""
    tables: dict[str, list[dict]] = {t: [] for t in specs.emis_tables()}
    pid = 1
    for prac in world.practices:
        tables["Agreements_SharingOrganisation"].append(
            {
                "OrganisationGuid": prac.org_guid,
                "IsActivated": _b(prac.activated),
                "LastModifiedDate": f"{world.start - dt.timedelta(days=30):%Y-%m-%d} 06:35:16",
                "Disabled": FALSE,
                "Deleted": FALSE,
            }
        )
        if not prac.activated:
            continue
        tables["Admin_Organisation"].append(
            {
                "OrganisationGuid": prac.org_guid,
                "CDB": str(prac.cdb),
                "OrganisationName": prac.name,
                "ODSCode": prac.ods_code,
                "ParentOrganisationGuid": prac.ccg_guid,
                "CCGOrganisationGuid": prac.ccg_guid,
                "OrganisationType": "General Practice",
                "OpenDate": _d(prac.open_date),
                "MainLocationGuid": prac.location_guid,
                "ProcessingId": str(pid),
            }
        )
        tables["Admin_Location"].append(
            {
                "LocationGuid": prac.location_guid,
                "LocationName": prac.name,
                "LocationTypeDescription": "Main Surgery",
                "OpenDate": _d(prac.open_date),
                "Postcode": prac.postcode.replace(" ", "")[:7],
                "Deleted": FALSE,
                "ProcessingId": str(pid),
            }
        )
        tables["Admin_OrganisationLocation"].append(
            {
                "OrganisationGuid": prac.org_guid,
                "LocationGuid": prac.location_guid,
                "IsMainLocation": TRUE,
                "Deleted": FALSE,
                "ProcessingId": str(pid),
            }
        )
    for s in world.staff:
        tables["Admin_UserInRole"].append(
            {
                "UserInRoleGuid": s.user_in_role_guid,
                "OrganisationGuid": s.org_guid,
                "Title": s.title,
                "GivenName": s.given,
                "Surname": s.surname,
                "JobCategoryCode": s.job_category_code,
                "JobCategoryName": s.job_category_name,
                "ContractStartDate": _d(s.contract_start),
                "ProcessingId": str(pid),
            }
        )
    active = {p.org_guid for p in world.practices if p.activated}
    for p in world.patients:
        if p.org_guid in active and p.reg_date <= on:
            tables["Admin_Patient"].append(_patient_row(p, pid))
    return tables


def write_batch(
    world: World,
    tables: dict[str, list[dict]],
    feed_dir: Path,
    *,
    extract_ts: dt.datetime,
    batch_number: int,
    export_type: str,
    keyring: Keyring | None,
    recipient: str | None,
    version: str = specs.LATEST_EMIS_VERSION,
    legacy_names: bool = False,
) -> list[Path]:
    """Write one batch (a file per table, header-only when empty), encrypted when a recipient is given."""
    folder = feed_dir / extract_ts.strftime("%Y%m%d")
    # plaintext never touches the served tree: it is written to a private temp folder first
    plain_dir = Path(tempfile.mkdtemp(prefix="im1-synth-"))
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for table in sorted(specs.emis_tables()):
        cols = specs.emis_table(table).column_names(version)
        name = emis.format_name(
            table,
            extract_ts,
            world.agreement_guid,
            export_type=export_type,
            batch_number=batch_number,
            legacy_pids=f"{batch_number}-{batch_number}" if legacy_names else None,
            encrypted=keyring is not None,
        )
        if keyring is None:
            write_csv(folder / name, cols, tables.get(table, []))
            written.append(folder / name)
            continue
        plain = plain_dir / name[:-4]
        write_csv(plain, cols, tables.get(table, []))
        # encrypt to a temporary name and rename, as a supplier's upload would appear atomically
        tmp = folder / (name + ".uploading")
        keyring.encrypt_file(plain, tmp, recipient or "")
        tmp.replace(folder / name)
        plain.unlink()
        written.append(folder / name)
    shutil.rmtree(plain_dir, ignore_errors=True)
    return written
