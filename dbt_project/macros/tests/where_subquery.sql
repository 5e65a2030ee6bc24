{#- dbt's get_where_subquery, plus two names a test's `where` may use:
    - __this__: the tested relation;
    - __latest_applied_at__: the latest applied_at in the tested relation, as a constant, to test
      only the rows an incremental model applied in its latest run:
          config: {where: "applied_at = __latest_applied_at__"}
      It is looked up when the test runs and written into the query as a literal, not as a
      subquery: with a literal the planner sees from the column statistics that a daily run's rows
      are a sliver of the table and reads them through the applied_at index; with a subquery it
      can only guess, and after a full refresh (one applied_at for every row) it guesses "all of
      them" and scans the whole table. -#}
{% macro default__get_where_subquery(relation) -%}
    {% set where = config.get('where', '') %}
    {% if where %}
        {%- if '__latest_applied_at__' in where -%}
            {%- set latest = 'null' -%}
            {#- (dbt docs generate and dbt compile render tests too, maybe before the model exists) -#}
            {%- if execute and load_relation(relation) is not none -%}
                {%- set found = im1_max_applied_at(relation) -%}
                {%- if found is not none -%}
                    {%- set latest = "cast('" ~ found ~ "' as timestamptz)" -%}
                {%- endif -%}
            {%- endif -%}
            {%- set where = where | replace('__latest_applied_at__', latest) -%}
        {%- endif -%}
        {%- set filtered -%}
            (select * from {{ relation }} where {{ where | replace('__this__', relation | string) }}) dbt_subquery
        {%- endset -%}
        {% do return(filtered) %}
    {%- else -%}
        {% do return(relation) %}
    {%- endif -%}
{%- endmacro %}
