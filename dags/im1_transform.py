"""The dbt transform DAG (astronomer-cosmos, manifest load mode), triggered by raw-data Assets."""

from im1.airflow.ingest import all_raw_assets
from im1.airflow.transform import build_transform_dag
from im1.config import load_config

dag = build_transform_dag(all_raw_assets(load_config()))
