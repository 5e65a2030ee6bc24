{#- marts.mart_data_freshness for BI, as it is: it counts batches and rows of the delivery ledger,
    not people, so small-number suppression does not apply. A view, so its hours stay current. -#}
{{ config(materialized='view') }}
select
    feed_id,
    supplier,
    practice_code,
    last_batch_id,
    last_batch_extract_ts,
    last_batch_status,
    last_batch_quality_status,
    last_loaded_extract_ts,
    last_loaded_at,
    last_load_rows,
    rows_loaded_total,
    hours_since_last_load,
    hours_since_last_extract,
    batches,
    loaded_batches,
    quarantined_batches,
    pending_batches,
    late_batches
from {{ ref('mart_data_freshness') }}
