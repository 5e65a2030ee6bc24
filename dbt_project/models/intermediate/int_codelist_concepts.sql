{#- Every code-list seed as one table: (codelist, SNOMED CT concept). The cluster, version and
    source of each list come from the seed's meta in seeds/codelists/_codelists__seeds.yml. Drug
    lists (dm+d product ids, e.g. ASTTRT_COD) are flagged: they match medication issues, not coded
    entries. -#}
{%- set codelists = [
    'dm_cod', 'dmres_cod', 'hyp_cod', 'hypres_cod', 'ast_cod', 'astres_cod', 'asttrt_cod', 'copd_cod',
    'copdres_cod', 'chd_cod', 'afib_cod', 'afibres_cod', 'ckd_cod', 'ckd1and2_cod', 'ckdres_cod',
    'depr_cod', 'depres_cod', 'bp_cod', 'bp_systolic_qof', 'bp_diastolic_qof', 'bp_home_amb_qof',
    'hyppcapu_cod', 'hyppcadec_cod', 'bpdec_cod', 'htmax_cod', 'hypinvite_cod', 'ifcchbam_cod',
    'serfruc_cod', 'mildfrail_cod', 'modfrail_cod', 'sevfrail_cod', 'dmmax_cod', 'dmpcapu_cod',
    'dmpcadec_cod', 'bldtestdec_cod', 'dminvite_cod', 'lsmok_cod', 'exsmok_cod', 'opt_out_dissent_codes',
    'gp_sensitive_exclusion_refsets',
] -%}
{#- drug (dm+d) lists: matched against medication issues, never against coded entries -#}
{%- set drug_codelists = ['asttrt_cod'] -%}

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
    {{ 'true' if name == 'gp_sensitive_exclusion_refsets' else 'false' }} as is_sensitive_refset,
    {{ 'true' if name in drug_codelists else 'false' }} as is_drug_list
from {{ ref(name) }}
{% if not loop.last %}union all{% endif %}
{%- endfor %}
