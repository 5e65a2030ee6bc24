{#- The full files of ready TPP batches (the manifest's IsDelta = N: the bulk, or a re-bulk of one
    file): each supersedes every earlier row of its table for the practice (macros/staging.sql). -#}
select
    f.batch_id,
    b.practice_code,
    lower(f.table_name) as raw_table,
    b.extract_ts
from {{ source('ingest', 'files') }} as f
inner join {{ ref('stg_ingest__batches_ready') }} as b on b.batch_id = f.batch_id
where b.supplier = 'tpp'
  and f.is_delta = false
  and f.status = 'loaded'
