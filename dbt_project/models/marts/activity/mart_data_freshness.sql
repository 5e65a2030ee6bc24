{#- Data freshness per feed and organisation, from the ingest ledger: the latest extract loaded,
    the status of the latest batch delivered, rows loaded and how long ago. A view, so the hours
    are as of the moment it is read (a dashboard tile or an alert), not as of the last dbt run. -#}
{{ config(materialized='view') }}

with

batches as (
    select
        feed_id,
        supplier,
        organisation,
        batch_id,
        extract_ts,
        status,
        quality_status,
        rows_loaded,
        loaded_at,
        is_late
    from {{ source('ingest', 'batches') }}
),

latest as (
    select distinct on (feed_id, organisation)
        feed_id,
        organisation,
        batch_id as last_batch_id,
        extract_ts as last_batch_extract_ts,
        status as last_batch_status,
        quality_status as last_batch_quality_status
    from batches
    order by feed_id, organisation, extract_ts desc, batch_id desc
),

latest_loaded as (
    select distinct on (feed_id, organisation)
        feed_id,
        organisation,
        extract_ts as last_loaded_extract_ts,
        loaded_at as last_loaded_at,
        rows_loaded as last_load_rows
    from batches
    where status = 'loaded'
    order by feed_id, organisation, extract_ts desc, batch_id desc
),

totals as (
    select
        feed_id,
        organisation,
        min(supplier) as supplier,
        count(*) as batches,
        count(*) filter (where status = 'loaded') as loaded_batches,
        count(*) filter (where status = 'quarantined') as quarantined_batches,
        count(*) filter (where status not in ('loaded', 'quarantined')) as pending_batches,
        count(*) filter (where is_late) as late_batches,
        coalesce(sum(rows_loaded) filter (where status = 'loaded'), 0) as rows_loaded_total
    from batches
    group by feed_id, organisation
)

select
    t.feed_id,
    t.supplier,
    t.organisation as practice_code,
    l.last_batch_id,
    l.last_batch_extract_ts,
    l.last_batch_status,
    l.last_batch_quality_status,
    ll.last_loaded_extract_ts,
    ll.last_loaded_at,
    ll.last_load_rows,
    t.rows_loaded_total,
    round(cast(extract(epoch from (now() - ll.last_loaded_at)) / 3600 as numeric), 1) as hours_since_last_load,
    round(cast(extract(epoch from (localtimestamp - ll.last_loaded_extract_ts)) / 3600 as numeric), 1)
        as hours_since_last_extract,
    t.batches,
    t.loaded_batches,
    t.quarantined_batches,
    t.pending_batches,
    t.late_batches
from totals as t
inner join latest as l on l.feed_id = t.feed_id and l.organisation = t.organisation
left join latest_loaded as ll on ll.feed_id = t.feed_id and ll.organisation = t.organisation
