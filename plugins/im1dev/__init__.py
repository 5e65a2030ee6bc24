"""Development and demo tooling of the IM1 platform (not part of the product the Airflow image ships).

The synthetic supplier (``im1dev.synth``), its ground truth and the QOF casebook, reconciliation
(``reconcile``), the demo, benchmarks, the local runtime with an embedded PostgreSQL
(``runtime``, ``embedded``), the test SFTP server, local Airflow and docs servers, the dbt code
generator and the Compose stack's one-shot jobs. It imports the product (``im1``); the product never
imports it (``tests/test_repo.py`` checks). Its commands join the ``im1`` CLI through the
``im1.cli`` entry point group.
"""
