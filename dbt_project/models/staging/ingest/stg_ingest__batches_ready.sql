{#- The ledger batches whose rows staging may use: loaded, and passed their quality checks. A batch
    still being checked, quarantined or failed is left out, so its rows never reach a mart. -#}
select
    batch_id,
    feed_id,
    supplier,
    organisation as practice_code,
    batch_key,
    extract_ts,
    schema_version,
    is_late,
    rows_loaded,
    loaded_at
from {{ source('ingest', 'batches') }}
where status = 'loaded'
  and quality_status = 'passed'
