{#- dbt's get_where_subquery, plus: a test's `where` may name the tested relation as __this__, e.g.
    to test only the rows an incremental model applied in its latest run:
        config: {where: "applied_at = (select max(applied_at) from __this__)"} -#}
{% macro default__get_where_subquery(relation) -%}
    {% set where = config.get('where', '') %}
    {% if where %}
        {%- set filtered -%}
            (select * from {{ relation }} where {{ where | replace('__this__', relation | string) }}) dbt_subquery
        {%- endset -%}
        {% do return(filtered) %}
    {%- else -%}
        {% do return(relation) %}
    {%- endif -%}
{%- endmacro %}
