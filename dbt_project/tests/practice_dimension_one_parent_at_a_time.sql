{#- The practice dimension gives each practice one parent at a time and each parent one parent at a
    time: two validity periods of a practice that overlap would count its patients twice in every
    roll-up (PRGP maps each practice to one PCN, sub-ICB location and ICB per month: casebook/sources.yml
    PRGP-META), and a PCN or sub-ICB location under two parents at once would split or double a total.
    Lists the offending codes. -#}
with dim as (
    select *, coalesce(valid_to, 'infinity'::date) as valid_until from {{ ref('practice_dimension') }}
),

overlapping as (  -- every two distinct rows whose validity periods overlap
    select a.practice_code, a.pcn_code, a.pcn_name, a.sub_icb_code, a.icb_code, a.valid_from,
           b.practice_code as other_practice, b.pcn_code as other_pcn, b.pcn_name as other_pcn_name,
           b.sub_icb_code as other_sub_icb, b.icb_code as other_icb, b.valid_from as other_from
    from dim as a
    join dim as b
      on a.valid_from < b.valid_until and b.valid_from < a.valid_until
     and (a.practice_code, a.valid_from) <> (b.practice_code, b.valid_from)
)

select 'practice periods overlap' as problem, practice_code as code, valid_from, other_from
from overlapping where practice_code = other_practice
union all
select 'PCN with two names or sub-ICB locations at once', pcn_code, valid_from, other_from
from overlapping where pcn_code = other_pcn and (pcn_name <> other_pcn_name or sub_icb_code <> other_sub_icb)
union all
select 'sub-ICB location under two ICBs at once', sub_icb_code, valid_from, other_from
from overlapping where sub_icb_code = other_sub_icb and icb_code <> other_icb
