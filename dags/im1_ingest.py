"""One daily ingest DAG per feed declared in include/feeds.yaml (or $IM1_FEEDS_FILE).

Thin by design: the DAGs are built by im1.airflow.ingest from the validated feed config;
all fetch/decrypt/validate/load logic lives in the im1 package.
"""

from im1.airflow.ingest import build_all

for _dag in build_all():
    globals()[_dag.dag_id] = _dag
