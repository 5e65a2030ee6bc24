{#- Completed years between a date of birth and a reference date. -#}
{% macro age_in_years(dob, on) -%}
    cast(date_part('year', age({{ on }}, {{ dob }})) as integer)
{%- endmacro %}

{#- PRGP 5-year bands: 0-4 ... 90-94, 95+ -#}
{% macro age_band_5y(age) -%}
    case when {{ age }} >= 95 then '95+'
         else cast(({{ age }} / 5) * 5 as text) || '-' || cast(({{ age }} / 5) * 5 + 4 as text) end
{%- endmacro %}

{#- Sort key of the PRGP band: 0 for 0-4 ... 19 for 95+. -#}
{% macro age_band_order(age) -%}
    least({{ age }} / 5, 19)
{%- endmacro %}
