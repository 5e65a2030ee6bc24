{#- Use each layer's schema name as-is (staging, intermediate, marts, ...): the warehouse
    bootstrap creates exactly these schemas and grants the BI role access to the marts only. -#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {{ custom_schema_name if custom_schema_name is not none else target.schema }}
{%- endmacro %}
