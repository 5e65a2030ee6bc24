"""Re-queue a quarantined IM1 batch (trigger with {"batch_id": ..., "reason": ...}); see im1.airflow.release."""

from im1.airflow.release import build_release_dag

dag = build_release_dag()
