{#- Casts for TPP SystmOne text values (raw tables are all text; an empty string is NULL).
    TPP dates are 'dd MMM yyyy', date-times 'dd MMM yyyy HH:mm:ss' (SRPatient: 'HH:mm') with
    English month abbreviations; PostgreSQL reads all three forms whatever its DateStyle, because
    the month is a word. Flags come as 1/0 (RemovedData) or true/false; Y/N is accepted too. -#}

{% macro tpp_text(col) -%}
    nullif({{ col }}, '')
{%- endmacro %}

{#- ODS codes and other organisation codes: trimmed, upper case. -#}
{% macro tpp_code(col) -%}
    nullif(upper(trim({{ col }})), '')
{%- endmacro %}

{#- RowIdentifier and the numeric ID* columns (64-bit, as Endeavour parsed them). -#}
{% macro tpp_bigint(col) -%}
    cast(nullif(trim({{ col }}), '') as bigint)
{%- endmacro %}

{% macro tpp_int(col) -%}
    cast(nullif(trim({{ col }}), '') as integer)
{%- endmacro %}

{% macro tpp_numeric(col) -%}
    cast(nullif(trim({{ col }}), '') as numeric)
{%- endmacro %}

{% macro tpp_timestamp(col) -%}
    cast(nullif(trim({{ col }}), '') as timestamp)
{%- endmacro %}

{#- A date-only column: the date part (a time of 00:00, if sent, is dropped). -#}
{% macro tpp_date(col) -%}
    cast(cast(nullif(trim({{ col }}), '') as timestamp) as date)
{%- endmacro %}

{% macro tpp_bool(col) -%}
    case lower(nullif(trim({{ col }}), ''))
        when '1' then true when 'true' then true when 'y' then true when 'yes' then true
        when '0' then false when 'false' then false when 'n' then false when 'no' then false
    end
{%- endmacro %}

{#- SystmOne sends a medication quantity as one text, e.g. '28 tablet': its number and its unit. -#}
{% macro tpp_quantity_number(col) -%}
    cast(nullif(substring(trim({{ col }}) from '^[0-9]+(?:\.[0-9]+)?'), '') as numeric)
{%- endmacro %}

{% macro tpp_quantity_unit(col) -%}
    nullif(trim(regexp_replace(trim({{ col }}), '^[0-9]+(?:\.[0-9]+)?', '')), '')
{%- endmacro %}
