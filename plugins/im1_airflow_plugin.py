"""Airflow loads plugins from this folder: the IM1 UI pages and lineage listener (see im1.airflow.plugin)."""

from im1.airflow.plugin import Im1Plugin  # noqa: F401
