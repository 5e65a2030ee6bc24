{#- Every code-list seed as one table: (codelist, SNOMED CT concept). The cluster, version and
    source of each list come from the seed's meta in seeds/codelists/_codelists__seeds.yml. -#}
{%- set codelists = [
    'dm_cod', 'hyp_cod', 'ast_cod', 'copd_cod', 'chd_cod', 'afib_cod', 'ckd_cod', 'depr_cod',
    'qof_resolved_cod', 'bp_cod', 'bp_systolic_qof', 'bp_diastolic_qof', 'ifcchbam_cod',
    'lsmok_cod', 'exsmok_cod', 'frailty_cod', 'opt_out_dissent_codes', 'gp_sensitive_exclusion_refsets',
] -%}

{%- for name in codelists %}
{%- set meta = {} -%}
{%- if execute -%}
    {%- set meta = graph.nodes.get('seed.' ~ project_name ~ '.' ~ name, {}).get('config', {}).get('meta', {}) -%}
{%- endif %}
select
    '{{ name }}' as codelist,
    cast('{{ meta.get('cluster', '') | string | replace("'", "''") }}' as text) as cluster,
    cast('{{ meta.get('version', '') | string | replace("'", "''") }}' as text) as codelist_version,
    cast(code as bigint) as snomed_concept_id,
    term,
    {{ 'true' if name == 'gp_sensitive_exclusion_refsets' else 'false' }} as is_sensitive_refset
from {{ ref(name) }}
{% if not loop.last %}union all{% endif %}
{%- endfor %}
