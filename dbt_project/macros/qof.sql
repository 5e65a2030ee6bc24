{#- Join condition: the same patient (supplier, practice, patient id) on the same QOF reference date. -#}
{% macro im1_same_qof_patient(a, b) -%}
    {{ a }}.supplier = {{ b }}.supplier and {{ a }}.practice_code = {{ b }}.practice_code
    and {{ a }}.patient_id = {{ b }}.patient_id and {{ a }}.reference_date = {{ b }}.reference_date
{%- endmacro %}
