{#- Warns (never fails the build) while any supplier value is missing from a GPAD mapping seed:
    each row is one value an operator should add to the seed it names (int_gpad_unmapped). -#}
{{ config(severity='warn', tags=['gpad']) }}
select supplier, practice_code, mapping, seed, source_value, records
from {{ ref('int_gpad_unmapped') }}
