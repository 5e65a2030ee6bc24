{#- Statistical disclosure control for published aggregates: NHS England's rule for outputs below
    national level (marts.md 5.4, after the HES/ECDS methodology from September 2018):

      0 stays 0; 1 to 7 is suppressed (NULL, and the row's is_suppressed flag is true);
      8 and above is rounded to the nearest 5 (half away from zero; whole counts never tie).

    Worked example: [0, 3, 7, 8, 12, 13, 1234] -> [0, *, *, 10, 10, 15, 1235].
    Only the published schema uses it: the marts stay unsuppressed for reconciliation. -#}

{% macro sdc_count(count) -%}
    cast(case
        when {{ count }} is null then null
        when {{ count }} = 0 then 0
        when {{ count }} between 1 and 7 then null
        else round({{ count }} / 5.0) * 5
    end as bigint)
{%- endmacro %}

{#- True when sdc_count() withholds the value. -#}
{% macro sdc_is_suppressed(count) -%}
    coalesce({{ count }} between 1 and 7, false)
{%- endmacro %}

{#- A rate from published counts: recomputed from the suppressed/rounded numerator and
    denominator (never from the true counts), withheld (NULL) when either is suppressed or the
    denominator is 0. ``scale`` 100 gives a percentage; rounded to ``digits`` decimals. -#}
{% macro sdc_rate(numerator, denominator, scale=100, digits=1) -%}
    case
        when {{ sdc_count(numerator) }} is null or {{ sdc_count(denominator) }} is null then null
        when {{ sdc_count(denominator) }} = 0 then null
        else round({{ scale }} * {{ sdc_count(numerator) }}::numeric / {{ sdc_count(denominator) }}, {{ digits }})
    end
{%- endmacro %}

{#- The label of a dimension in a GROUPING SETS / CUBE / ROLLUP query: 'ALL' on the rows that
    total over it (grouping() = 1), its own value otherwise (a NULL value stays NULL, so a total
    is never confused with a missing category). Totals are summed from the exact counts and only
    then put through sdc_count(): summing published (rounded) cells is never needed and never
    right (marts.md 5.4; casebook/publication.yml). -#}
{% macro pub_all(column) -%}
    case when grouping({{ column }}) = 1 then 'ALL' else {{ column }} end
{%- endmacro %}
