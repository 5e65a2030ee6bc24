{#- Casts for EMIS text values (raw tables are all text; empty string is NULL). -#}

{% macro emis_guid(col) -%}
    nullif(upper(trim({{ col }})), '')
{%- endmacro %}

{% macro emis_date(col) -%}
    cast(nullif(trim({{ col }}), '') as date)
{%- endmacro %}

{% macro emis_bool(col) -%}
    case lower(nullif(trim({{ col }}), '')) when 'true' then true when '1' then true
         when 'false' then false when '0' then false end
{%- endmacro %}

{% macro emis_int(col) -%}
    cast(nullif(trim({{ col }}), '') as bigint)
{%- endmacro %}

{% macro emis_text(col) -%}
    nullif({{ col }}, '')
{%- endmacro %}

{% macro emis_timestamp(col) -%}
    cast(nullif(trim({{ col }}), '') as timestamp)
{%- endmacro %}

{% macro emis_time(col) -%}
    cast(nullif(trim({{ col }}), '') as time)
{%- endmacro %}

{% macro emis_numeric(col) -%}
    cast(nullif(trim({{ col }}), '') as numeric)
{%- endmacro %}
