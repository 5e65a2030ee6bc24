"""IM1 bulk-extract platform: fetch, decrypt, validate and stage GP extracts; helpers for dbt and Airflow.

The core modules are plain Python with no Airflow import, so they can be used from the
``im1`` command line, from tests and from the thin Airflow adapters in :mod:`im1.airflow`.
"""

__version__ = "0.1.0"
