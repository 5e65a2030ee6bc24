"""The extract specifications drive DDL, validation and version detection."""

from __future__ import annotations

import pytest

from im1 import specs

pytestmark = pytest.mark.unit  # no service: `make test-unit` runs it


def test_emis_spec_has_21_tables_and_known_version_differences():
    t = specs.emis_tables()
    assert len(t) == 21
    slot = specs.emis_table("Appointment_Slot")
    added = set(slot.column_names("8.2")) - set(slot.column_names("8.0"))
    assert added == {"IsBlocked", "ContextType", "ServiceSetting", "NationalSlotCategoryName",
                     "NationalSlotCategoryDescription"}
    assert not specs.emis_table("Admin_Organisation").has_deleted
    assert not specs.emis_table("Agreements_SharingOrganisation").has_processing_id


def test_version_detection_by_header_name_not_position():
    slot = specs.emis_table("Appointment_Slot")
    assert specs.detect_emis_version("Appointment_Slot", list(reversed(slot.column_names("8.2")))) == "8.2"
    assert specs.detect_emis_version("Appointment_Slot", slot.column_names("8.0") + ["Extra"]) == "8.0"
    assert specs.detect_emis_version("Appointment_Slot", slot.column_names("8.0")[1:]) is None


def test_tpp_spec_lists_files_and_columns():
    f = specs.tpp_files()
    assert "SRPatient" in f and "RowIdentifier" in f["SRPatient"].columns
    assert f["SRManifest"].columns == ("FileName", "IsDelta", "IsReference", "DateExtractFrom", "DateExtractTo")
