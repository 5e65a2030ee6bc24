{#- GPAD booking lead time: whole calendar days from the booking date to the appointment date
    (marts.md 4.5). No booking date, or a booking after the appointment, is a data-quality case. -#}
{% macro gpad_lead_time_band(days) -%}
    case
        when {{ days }} is null or {{ days }} < 0 then 'Unknown / Data Quality'
        when {{ days }} = 0 then 'Same Day'
        when {{ days }} = 1 then '1 Day'
        when {{ days }} <= 7 then '2 to 7 Days'
        when {{ days }} <= 14 then '8 to 14 Days'
        when {{ days }} <= 21 then '15 to 21 Days'
        when {{ days }} <= 28 then '22 to 28 Days'
        else 'More than 28 Days'
    end
{%- endmacro %}

{#- The GPAD lead-time bands in publication order (for accepted_values tests and sorting). -#}
{% macro gpad_lead_time_bands() -%}
    {{ return(['Same Day', '1 Day', '2 to 7 Days', '8 to 14 Days', '15 to 21 Days', '22 to 28 Days',
               'More than 28 Days', 'Unknown / Data Quality']) }}
{%- endmacro %}

{#- int_appointments' fingerprint: a digest of the GPAD mapping seeds it applies (status, mode,
    context type). When an operator adds an unmapped value to a seed, the fingerprint changes and
    the next incremental run rebuilds the model, so rows built before are mapped too and an
    incremental run keeps equal to a full refresh (macros/README.md, fingerprints). -#}
{% macro im1_gpad_mappings_fingerprint() -%}
    select md5(concat_ws('|',
        (select string_agg(concat_ws(',', supplier, source_status, status_harmonised, gpad_status), ';'
                           order by supplier, source_status)
           from {{ ref('gpad_appointment_status_map') }}),
        (select string_agg(concat_ws(',', supplier, source_mode, national_mode, gpad_mode), ';'
                           order by supplier, source_mode)
           from {{ ref('gpad_appointment_mode_map') }}),
        (select string_agg(concat_ws(',', source_context, gpad_context_type, is_gpad_counted::text), ';'
                           order by source_context)
           from {{ ref('gpad_context_type_map') }})))
{%- endmacro %}
