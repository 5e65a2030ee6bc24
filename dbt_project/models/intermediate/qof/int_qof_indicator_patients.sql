{#- Why each register patient is (or is not) counted by each QOF indicator: one row per patient,
    reference date (ACHV_DAT) and indicator whose group the patient is in (HYP008/HYP009 by age in
    full years on ACHV_DAT; DM020/DM021 by frailty), following the rule chains in order
    (seeds/rules/qof_indicator_rules.csv, qof_exclusion_reasons.csv; casebook/qof_hyp.yml and
    qof_dm.yml state them case by case):

    HYP008/HYP009 (BR46-HYP, HYP003/HYP007 rules 1-9):
      1 age group; 2 select when the latest blood pressure in the 12 months up to PPED (the latest
      day with a systolic and a diastolic value) is at or below target: clinic 140/90 (80+:
      150/90), home or ambulatory reading 135/85 (145/85) (V50-HYP-HOME); several readings that
      day: the lowest systolic and the lowest diastolic; 3 reject maximal tolerated therapy
      (HTMAX_COD), 4 care unsuitable (HYPPCAPU_COD), 5 blood pressure declined (BPDEC_COD), 6 care
      declined (HYPPCADEC_COD), each in the 12 months up to PPED; 7 reject two invitations (the
      first on or after QSSD, the second at least 7 days later) after a reading above target or
      with no reading in the 12 months; 8 reject the earliest diagnosis (HYP_DAT) in the 9 months
      up to PPED; 9 reject registration (REG_DAT) in the 9 months up to PPED, select the rest.
    DM020/DM021 (BR46-DM 4.1 rules 1-10):
      1 frailty group: moderate or severe when the latest frailty code (no look-back limit) is a
      MODFRAIL/SEVFRAIL code (on the same day as a mild code, moderate/severe wins); 2 select
      when the latest IFCC-HbA1c is in the 12 months up to PPED and at or below target (the lowest
      value of that day); 3 reject serum fructosamine and no HbA1c in the 12 months; 4 DMMAX_COD,
      5 DMPCAPU_COD, 6 BLDTESTDEC_COD, 7 DMPCADEC_COD in the 12 months; 8 invitations (as HYP
      rule 7); 9 reject the first diagnosis (DM_DAT) in the 9 months up to PPED; 10 reject
      registration in the 9 months, select the rest.

    "In the n months up to PPED" is after PPED - n months and on or before ACHV_DAT (on a month-end
    the windows still count back from the QOF year's PPED, BR46-DM 3.1). Target first: a patient
    who meets it is in the numerator and the denominator whatever follows.

    status: numerator (in numerator and denominator), denominator (in the denominator only) or
    excluded (a personalised care adjustment or exclusion: not counted); reason: target_met,
    target_not_met or the exclusion (qof_exclusion_reasons); rule: the rule that decided. -#}
{{ config(indexes=[{'columns': ['supplier', 'practice_code', 'reference_date', 'indicator']}],
          pre_hook="set local enable_nestloop = off") }}
{#- Joins on (supplier, practice, patient, reference date) collapse the planner's row estimates to
    1; nested loops over them took 30 s on a 300-patient practice, hash joins 0.1 s. -#}
{%- set key = ['supplier', 'practice_code', 'patient_id', 'reference_date'] %}
with

rules as (
    select * from {{ ref('qof_indicator_rules') }}
),

members as (
    select
        m.supplier,
        m.practice_code,
        m.patient_id,
        m.person_key,
        m.reference_date,
        m.reference_kind,
        m.qof_year,
        m.register,
        m.first_diagnosis_date,
        p.age_years,
        p.registration_date,
        p.pped,
        p.qssd,
        {{ im1_months_before('p.pped', 12) }} as pped_12m,
        {{ im1_months_before('p.pped', 9) }} as pped_9m
    from {{ ref('int_qof_register_patients') }} as m
    inner join {{ ref('int_qof_population') }} as p
        on {{ im1_same_qof_patient('p', 'm') }}
    where m.is_on_register
      and m.register in (select register from rules)
),

member_dates as (
    select distinct supplier, practice_code, patient_id, reference_date, pped_12m from members
),

-- the members' entries up to the reference date: frailty at any date, everything else only in the
-- 12 months up to PPED (no rule looks further back)
events as (
    select
        m.reference_date,
        e.supplier,
        e.practice_code,
        e.patient_id,
        e.event_id,
        e.cluster,
        e.event_date,
        e.value
    from {{ ref('int_qof_events') }} as e
    inner join member_dates as m
        on m.supplier = e.supplier and m.practice_code = e.practice_code and m.patient_id = e.patient_id
       and e.event_date <= m.reference_date
    where e.cluster in ('MILDFRAIL_COD', 'MODFRAIL_COD', 'SEVFRAIL_COD')
       or (e.event_date > m.pped_12m and e.cluster in (
            'BP_SYS', 'BP_DIA', 'HOMEAMBBP', 'HTMAX_COD', 'HYPPCAPU_COD', 'BPDEC_COD', 'HYPPCADEC_COD',
            'HYPINVITE_COD', 'IFCCHBAM_COD', 'SERFRUC_COD', 'DMMAX_COD', 'DMPCAPU_COD', 'BLDTESTDEC_COD',
            'DMPCADEC_COD', 'DMINVITE_COD'))
),

-- blood pressure: each entry's value, and whether it is a home or ambulatory reading
bp_entries as (
    select
        {{ key | join(', ') }},
        event_id,
        event_date,
        max(value) filter (where cluster = 'BP_SYS') as systolic,
        max(value) filter (where cluster = 'BP_DIA') as diastolic,
        bool_or(cluster = 'HOMEAMBBP') as is_home_amb
    from events
    where cluster in ('BP_SYS', 'BP_DIA', 'HOMEAMBBP')
    group by {{ key | join(', ') }}, event_id, event_date
),

-- a reading is a day with a systolic and a diastolic value; the lowest of each counts
bp_days as (
    select
        {{ key | join(', ') }},
        event_date,
        min(systolic) filter (where not is_home_amb) as clinic_systolic,
        min(diastolic) filter (where not is_home_amb) as clinic_diastolic,
        min(systolic) filter (where is_home_amb) as home_systolic,
        min(diastolic) filter (where is_home_amb) as home_diastolic,
        min(systolic) as systolic,
        min(diastolic) as diastolic
    from bp_entries
    group by {{ key | join(', ') }}, event_date
    having min(systolic) is not null and min(diastolic) is not null
),

latest_bp as (
    select distinct on ({{ key | join(', ') }}) *
    from bp_days
    order by {{ key | join(', ') }}, event_date desc
),

hba1c_days as (
    select {{ key | join(', ') }}, event_date, min(value) as value
    from events
    where cluster = 'IFCCHBAM_COD'
    group by {{ key | join(', ') }}, event_date
),

latest_hba1c as (
    select distinct on ({{ key | join(', ') }}) *
    from hba1c_days
    order by {{ key | join(', ') }}, event_date desc
),

latest_frailty as (
    select distinct on ({{ key | join(', ') }})
        {{ key | join(', ') }},
        event_date as frailty_date,
        cluster in ('MODFRAIL_COD', 'SEVFRAIL_COD') as is_moderate_or_severe
    from events
    where cluster in ('MILDFRAIL_COD', 'MODFRAIL_COD', 'SEVFRAIL_COD')
    order by {{ key | join(', ') }}, event_date desc, (cluster in ('MODFRAIL_COD', 'SEVFRAIL_COD')) desc
),

codes_in_window as (
    select
        {{ key | join(', ') }},
        bool_or(cluster = 'HTMAX_COD') as htmax,
        bool_or(cluster = 'HYPPCAPU_COD') as hyppcapu,
        bool_or(cluster = 'BPDEC_COD') as bpdec,
        bool_or(cluster = 'HYPPCADEC_COD') as hyppcadec,
        bool_or(cluster = 'SERFRUC_COD') as serfruc,
        bool_or(cluster = 'DMMAX_COD') as dmmax,
        bool_or(cluster = 'DMPCAPU_COD') as dmpcapu,
        bool_or(cluster = 'BLDTESTDEC_COD') as bldtestdec,
        bool_or(cluster = 'DMPCADEC_COD') as dmpcadec
    from events
    where cluster not in ('MILDFRAIL_COD', 'MODFRAIL_COD', 'SEVFRAIL_COD', 'BP_SYS', 'BP_DIA', 'HOMEAMBBP',
                          'IFCCHBAM_COD', 'HYPINVITE_COD', 'DMINVITE_COD')
    group by {{ key | join(', ') }}
),

-- invitations of the QOF year: the first on or after QSSD (= after PPED - 12 months), the second
-- the earliest at least 7 days after the first
first_invites as (
    select {{ key | join(', ') }}, cluster, min(event_date) as invite1_date
    from events
    where cluster in ('HYPINVITE_COD', 'DMINVITE_COD')
    group by {{ key | join(', ') }}, cluster
),

invites as (
    select
        f.supplier,
        f.practice_code,
        f.patient_id,
        f.reference_date,
        f.cluster,
        f.invite1_date,
        min(e.event_date) as invite2_date
    from first_invites as f
    left join events as e
        on {{ im1_same_qof_patient('e', 'f') }}
       and e.cluster = f.cluster
       and e.event_date >= f.invite1_date + 7
    group by f.supplier, f.practice_code, f.patient_id, f.reference_date, f.cluster, f.invite1_date
),

assigned as (
    select
        m.*,
        i.indicator,
        i.ruleset,
        i.max_value,
        i.max_diastolic,
        i.home_max_value,
        i.home_max_diastolic,
        f.is_moderate_or_severe
    from members as m
    inner join rules as i
        on i.register = m.register
       and m.age_years >= i.min_age
       and (i.max_age is null or m.age_years <= i.max_age)
    left join latest_frailty as f on {{ im1_same_qof_patient('f', 'm') }}
    where i.frailty = 'any'
       or (i.frailty = 'moderate_or_severe') = coalesce(f.is_moderate_or_severe, false)
),

measured as (
    select
        a.*,
        case a.ruleset when 'HYP' then b.event_date else h.event_date end as reading_date,
        case a.ruleset when 'HYP' then b.systolic else h.value end as reading_value,
        case a.ruleset when 'HYP' then b.diastolic end as reading_diastolic,
        case
            when a.ruleset <> 'HYP' or b.event_date is null then null
            when b.clinic_systolic is null and b.home_systolic is not null then 'home_or_ambulatory'
            when b.home_systolic is not null then 'clinic_and_home'
            else 'clinic'
        end as reading_setting,
        coalesce(case a.ruleset
            when 'HYP' then
                -- a complete clinic reading at or below the clinic target, or a complete home or
                -- ambulatory one at or below its own; a day whose values are split between the
                -- two settings is judged on its lowest values against the clinic target
                (b.clinic_systolic <= a.max_value and b.clinic_diastolic <= a.max_diastolic)
                or (b.home_systolic <= a.home_max_value and b.home_diastolic <= a.home_max_diastolic)
                or ((b.clinic_systolic is null or b.clinic_diastolic is null)
                    and (b.home_systolic is null or b.home_diastolic is null)
                    and b.systolic <= a.max_value and b.diastolic <= a.max_diastolic)
            else h.value <= a.max_value
        end, false) as meets_target,
        coalesce(c.htmax, false) as htmax,
        coalesce(c.hyppcapu, false) as hyppcapu,
        coalesce(c.bpdec, false) as bpdec,
        coalesce(c.hyppcadec, false) as hyppcadec,
        coalesce(c.serfruc, false) as serfruc,
        coalesce(c.dmmax, false) as dmmax,
        coalesce(c.dmpcapu, false) as dmpcapu,
        coalesce(c.bldtestdec, false) as bldtestdec,
        coalesce(c.dmpcadec, false) as dmpcadec,
        v.invite1_date,
        v.invite2_date
    from assigned as a
    left join latest_bp as b on a.ruleset = 'HYP' and {{ im1_same_qof_patient('b', 'a') }}
    left join latest_hba1c as h on a.ruleset = 'DM' and {{ im1_same_qof_patient('h', 'a') }}
    left join codes_in_window as c on {{ im1_same_qof_patient('c', 'a') }}
    left join invites as v
        on {{ im1_same_qof_patient('v', 'a') }}
       and v.cluster = case a.ruleset when 'HYP' then 'HYPINVITE_COD' else 'DMINVITE_COD' end
),

decided as (
    select
        m.*,
        case
            when m.meets_target then 'target_met'
            when m.ruleset = 'HYP' and m.htmax then 'max_tolerated_treatment'
            when m.ruleset = 'HYP' and m.hyppcapu then 'unsuitable'
            when m.ruleset = 'HYP' and m.bpdec then 'bp_declined'
            when m.ruleset = 'HYP' and m.hyppcadec then 'care_declined'
            when m.ruleset = 'DM' and m.reading_date is null and m.serfruc then 'fructosamine'
            when m.ruleset = 'DM' and m.dmmax then 'max_tolerated_treatment'
            when m.ruleset = 'DM' and m.dmpcapu then 'unsuitable'
            when m.ruleset = 'DM' and m.bldtestdec then 'blood_test_declined'
            when m.ruleset = 'DM' and m.dmpcadec then 'care_declined'
            -- two invitations after a reading above target (a reading with a value: one without
            -- is neither above target nor missing, BR46-DM rule 8), or with no reading in the 12 months
            when m.invite2_date is not null
                 and ((m.reading_date is not null and m.reading_value is not null and m.invite1_date > m.reading_date)
                      or m.reading_date is null)
                then 'invitations'
            when m.first_diagnosis_date > m.pped_9m then 'recent_diagnosis'
            when m.registration_date > m.pped_9m then 'recent_registration'
            else 'target_not_met'
        end as reason
    from measured as m
)

select
    d.supplier,
    d.practice_code,
    d.patient_id,
    d.person_key,
    d.reference_date,
    d.reference_kind,
    d.qof_year,
    d.indicator,
    d.register,
    case d.reason when 'target_met' then 'numerator' when 'target_not_met' then 'denominator' else 'excluded' end
        as status,
    d.reason,
    case d.reason when 'target_met' then 2
                  when 'target_not_met' then (case d.ruleset when 'HYP' then 9 else 10 end)
                  else x.rule end as decided_by_rule,
    d.reason = 'target_met' as in_numerator,
    d.reason in ('target_met', 'target_not_met') as in_denominator,
    d.age_years,
    d.registration_date,
    d.first_diagnosis_date,
    d.is_moderate_or_severe as has_moderate_or_severe_frailty,
    d.reading_date,
    d.reading_value,
    d.reading_diastolic,
    d.reading_setting,
    d.invite1_date,
    d.invite2_date
from decided as d
left join {{ ref('qof_exclusion_reasons') }} as x on x.ruleset = d.ruleset and x.reason = d.reason
