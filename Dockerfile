# Two images from one file:
#
#   platform (the default target): the product only - every Airflow component of
#     docker-compose.yaml (API server, scheduler, DAG processor, triggerer, Celery workers) runs
#     from it; the development tooling (plugins/im1dev: synthetic supplier, demo, benchmarks, test
#     servers) is not in it;
#   tools: platform + plugins/im1dev, for the Compose stack's one-shot init jobs and mock supplier.
#
# Python packages are EXACTLY the lock: `uv pip sync requirements.txt` installs every pinned
# package of requirements.txt and nothing else (the same lock `make venv` uses); the project
# itself is then added with --no-deps. gpg (GnuPG 2) decrypts the suppliers' files.
#
#   docker-compose build          (or: docker build --target platform -t im1-platform:local .)
FROM python:3.12-slim-bookworm AS platform

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_NO_CACHE=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    AIRFLOW_HOME=/opt/airflow \
    IM1_PROJECT_ROOT=/opt/im1 \
    IM1_STATE_DIR=/var/lib/im1 \
    IM1_SUPPLIER_DIR=/srv/supplier

# gnupg: decryption; curl: health checks; tini: PID 1 that forwards signals and reaps children
RUN apt-get update \
 && apt-get install -y --no-install-recommends gnupg curl tini \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --uid 50000 --gid 0 --create-home --home-dir /home/airflow airflow \
 && mkdir -p /opt/im1 /opt/airflow/logs /var/lib/im1 /srv/supplier \
 && chown -R airflow:0 /opt/airflow /var/lib/im1 /srv/supplier

WORKDIR /opt/im1

# The lock first, so the (slow) dependency layer is rebuilt only when the lock changes.
COPY requirements.txt /opt/im1/requirements.txt
RUN pip install --no-deps "$(grep -E '^uv==' requirements.txt)" \
 && uv venv /opt/venv --python /usr/local/bin/python3.12 \
 && uv pip sync --python /opt/venv/bin/python requirements.txt

# The project: the im1 package (plugins/im1), the DAGs, the feed config and specs, the dbt
# project - without the development tooling (plugins/im1dev).
COPY . /opt/im1
RUN rm -rf /opt/im1/plugins/im1dev \
 && uv pip install --python /opt/venv/bin/python --no-deps --no-build-isolation -e . \
 && cd dbt_project \
 && DBT_PROFILES_DIR=. DBT_SEND_ANONYMOUS_USAGE_STATS=False dbt parse --quiet \
 && chown -R airflow:0 /opt/im1/dbt_project

USER airflow
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["airflow", "version"]

# The tools image: the platform plus plugins/im1dev (the im1 CLI's demo, synth, stack and
# sftp-server commands) for the Compose stack's one-shot jobs and its mock supplier.
FROM platform AS tools
USER root
COPY plugins/im1dev /opt/im1/plugins/im1dev
RUN uv pip install --python /opt/venv/bin/python --no-deps --no-build-isolation -e .
USER airflow
