"""The dbt unit tests (dbt_project/models/**/_*__unit_tests.yml: the worked examples of
docs/marts.md and the edges of every rule) on a scratch database of the test server.

dbt needs the relations the tested models read to exist (it takes column types from them), so
the project is built first on the empty warehouse (no raw data: every model is empty).
"""

from __future__ import annotations

from tests.dbt.conftest import run_dbt


def test_dbt_unit_tests_pass(scratch, tmp_path):
    results = run_dbt(scratch, tmp_path / "target", "build", "--exclude", "test_type:data")
    units = {r["unique_id"].split(".")[-1]: r["status"] for r in results if r["unique_id"].startswith("unit_test.")}
    assert len(units) >= 10 and set(units.values()) == {"pass"}, units
    for name in ("list_size_worked_example", "qof_prevalence_worked_example", "qof_indicator_counts",
                 "observations_kept_and_excluded"):
        assert name in units
    # the QOF casebook, compiled (im1 casebook gen): population, registers and indicators
    casebook = {n for n in units if n.startswith("casebook_")}
    assert {"casebook_population_population", "casebook_dm_registers", "casebook_dm_indicators",
            "casebook_hyp_indicators", "casebook_ast_registers", "casebook_dep_registers"} <= casebook
    # the GPAD casebook, compiled: every slot through EMIS and SystmOne, the not-counted slots, the roles
    assert {"casebook_gpad_appointments", "casebook_gpad_not_counted", "casebook_gpad_roles"} <= casebook
