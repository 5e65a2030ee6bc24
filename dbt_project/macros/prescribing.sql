{#- Items per 1,000 registered patients, rounded half away from zero to 2 decimals (numeric);
    empty when the list size is not held or is 0. -#}
{% macro im1_per_1000(items, list_size) -%}
    round(1000 * cast({{ items }} as numeric) / nullif(cast({{ list_size }} as numeric), 0), 2)
{%- endmacro %}
