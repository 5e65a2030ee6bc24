{#- Building blocks of the TPP staging models (models/staging/tpp). -#}

{#- The current rows of one raw TPP table, one per (organisation, RowIdentifier).

    The organisation is the practice the row was loaded for (_organisation; the ingest checks
    that IDOrganisationVisibleTo equals it), so this is the key (IDOrganisationVisibleTo,
    RowIdentifier), and it also keys the reference files that have no IDOrganisationVisibleTo
    (staff, organisations, SRMapping) per practice.

    1. A full file (ingest.files.is_delta = false: the manifest's IsDelta = N, e.g. the bulk or
       a re-bulk of SRCode) supersedes every earlier row of the table for that organisation:
       rows of batches before the latest full file (in extract order) are dropped.
    2. Of the remaining rows, the latest in extract order wins: batch extract time
       (ingest.batches.extract_ts = the manifest's DateExtractTo), then batch id, then the row's
       position in its file. A late batch (an older extract loaded after a newer one) therefore
       does not override the newer rows.
    3. A winning row with RemovedData = 1 is a deletion: the record is not current
       (`removed_data=false` for a file without the column, e.g. SRMapping).

    Only rows of ready batches count (loaded and passed their quality checks, as
    stg_ingest__batches_ready): a batch still being checked, quarantined or failed never reaches
    staging.

    Returns every raw column plus _extract_ts. -#}
{% macro tpp_current_rows(table, removed_data=true) -%}
    {%- set raw = source('raw_tpp', table) -%}
    select ranked.*
    from (
        select
            r.*,
            b.extract_ts as _extract_ts,
            row_number() over (
                partition by r._organisation, {{ tpp_bigint('r.rowidentifier') }}
                order by b.extract_ts desc, r._batch_id desc, r._row_number desc
            ) as _recency
        from {{ raw }} as r
        inner join {{ source('ingest', 'batches') }} as b
            on b.batch_id = r._batch_id and b.status = 'loaded' and b.quality_status = 'passed'
        left join (
            {#- the latest full file of this table per organisation -#}
            select distinct on (fb.organisation)
                fb.organisation,
                fb.extract_ts,
                fb.batch_id
            from {{ source('ingest', 'files') }} as ff
            inner join {{ source('ingest', 'batches') }} as fb on fb.batch_id = ff.batch_id
            where lower(ff.table_name) = '{{ table }}'
              and ff.is_delta = false
              and ff.status = 'loaded'
              and fb.supplier = 'tpp'
              and fb.status = 'loaded'
              and fb.quality_status = 'passed'
            order by fb.organisation, fb.extract_ts desc, fb.batch_id desc
        ) as full_file on full_file.organisation = r._organisation
        where full_file.batch_id is null
           or (b.extract_ts, r._batch_id) >= (full_file.extract_ts, full_file.batch_id)
    ) as ranked
    where ranked._recency = 1
    {%- if removed_data %}
      and coalesce({{ tpp_bool('ranked.removeddata') }}, false) = false
    {%- endif %}
{%- endmacro %}


{#- The organisations each patient has (or had) a GMS registration at, per practice, from every
    SRPatientRegistration row ever delivered (RegistrationStatus containing GMS, e.g.
    'GMS,Contraception'; both IDOrganisation and IDOrganisationRegisteredAt count), as Endeavour
    kept a cumulative map for its data-controller filter (im1-formats.md 3.8). -#}
{% macro tpp_gms_organisations() -%}
    select distinct
        reg._organisation as practice_code,
        {{ tpp_bigint('reg.idpatient') }} as id_patient,
        o.organisation
    from {{ source('raw_tpp', 'srpatientregistration') }} as reg
    inner join {{ source('ingest', 'batches') }} as b
        on b.batch_id = reg._batch_id and b.status = 'loaded' and b.quality_status = 'passed'
    cross join lateral (
        values ({{ tpp_code('reg.idorganisation') }}), ({{ tpp_code('reg.idorganisationregisteredat') }})
    ) as o (organisation)
    where reg.registrationstatus like '%GMS%'
      and o.organisation is not null
      and nullif(trim(reg.idpatient), '') is not null
{%- endmacro %}


{#- Shared care (im1-formats.md 3.8): the row is visible to the practice but was recorded at an
    organisation that is not its data controller, i.e. IDOrganisationRegisteredAt is another
    organisation and not one where the patient has a GMS registration. Staging keeps these rows
    and flags them; the intermediate layer drops them. `rows` names the relation holding the
    row's idorganisationregisteredat, idpatient and _organisation; `gms` the
    tpp_gms_organisations() relation. -#}
{% macro tpp_is_shared_care(rows='current_rows', gms='gms_organisations') -%}
    coalesce(
        {{ tpp_code(rows ~ '.idorganisationregisteredat') }} <> {{ rows }}._organisation
        and not exists (
            select 1
            from {{ gms }} as g
            where g.practice_code = {{ rows }}._organisation
              and g.id_patient = {{ tpp_bigint(rows ~ '.idpatient') }}
              and g.organisation = {{ tpp_code(rows ~ '.idorganisationregisteredat') }}
        ),
        false
    )
{%- endmacro %}


{#- Lineage columns every TPP staging model ends with. -#}
{% macro tpp_lineage(rows='current_rows') -%}
    {{ rows }}._organisation as practice_code,
        {{ rows }}._feed_id as feed_id,
        {{ rows }}._batch_id as batch_id,
        {{ rows }}._extract_ts as extract_ts
{%- endmacro %}
