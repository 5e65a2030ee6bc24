{#- The reference date of each practice: the data date of its latest extract that loaded and
    passed its quality checks. Extracts are cut at midnight after the data date and stamped the
    next morning, so the data date is the extract's day minus one. Shared rows of a
    multi-organisation feed (organisation '*') belong to no practice. -#}
select
    supplier,
    practice_code,
    cast(max(extract_ts) as date) - 1 as reference_date,
    max(extract_ts) as latest_extract_ts
from {{ ref('stg_ingest__batches_ready') }}
where practice_code <> '*'
group by supplier, practice_code
