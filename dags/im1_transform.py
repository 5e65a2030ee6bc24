"""The dbt transform DAG (astronomer-cosmos, manifest load mode), triggered by raw-data Assets."""

from im1.airflow.transform import build_transform_dag

dag = build_transform_dag()
