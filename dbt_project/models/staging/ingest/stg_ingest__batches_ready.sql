{#- THE ready-batch rule, written once: a batch's rows may be used when the batch loaded and passed
    its quality checks. A batch still being checked, quarantined or failed is left out, so its rows
    never reach a mart. Every staging model, the incremental bookkeeping (macros/incremental.sql)
    and the reference dates read the ledger through this model. -#}
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
