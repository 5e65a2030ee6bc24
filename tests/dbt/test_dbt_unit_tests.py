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
    for name in ("list_size_worked_example", "register_rules", "qof_indicators_worked_examples",
                 "qof_indicators_thresholds", "qof_prevalence_worked_example", "observations_kept_and_excluded"):
        assert name in units
