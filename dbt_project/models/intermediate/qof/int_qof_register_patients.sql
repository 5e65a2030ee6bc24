{#- Person x register x reference date, for every patient of the QOF population with a diagnosis
    code of the register's condition on or before the reference date (ACHV_DAT). The rules are
    data (seeds/rules/qof_register_rules.csv, each row citing its source), and their meaning case
    by case is the casebook (dbt_project/casebook/qof_*.yml, compiled into this model's unit tests):

    - latest_diagnosis_date (e.g. DMLAT_DAT): the latest diagnosis code on or before ACHV_DAT; for
      the depression register only first or new episodes count (episode type not review, ended,
      changed, evolved or flare up; none recorded counts);
    - first_diagnosis_date (e.g. DM_DAT, HYP_DAT): the earliest diagnosis code on or before ACHV_DAT;
    - resolved_date (e.g. DMRES_DAT): the latest resolved code dated strictly after the latest
      diagnosis (BR46-DM 3.2.4: "Latest > DMLAT_DAT"; a resolution on the same day does not
      resolve); downstaged_date likewise for CKD stage 1-2 codes;
    - latest_treatment_date: the latest issue of the register's treatment cluster (asthma:
      ASTTRT_COD) in the treatment_months up to and including ACHV_DAT (the register is a state
      on its date: "treated in the preceding 12 months"; on 31 March ACHV_DAT is PPED).

    register_status is 'on_register' or the first rule the patient fails: no_first_or_new_episode,
    before_2006 (the latest diagnosis is before diagnosed_on_or_after), no_treatment, downstaged,
    resolved, under_age (age in full years on ACHV_DAT below min_age). -#}
{{ config(indexes=[{'columns': ['supplier', 'practice_code', 'patient_id']}],
          pre_hook="set local enable_nestloop = off") }}
{#- Joins on (supplier, practice, patient, reference date) collapse the planner's row estimates to
    1; nested loops over them took 30 s on a 300-patient practice, hash joins 0.1 s. -#}
with

population as (
    select * from {{ ref('int_qof_population') }}
),

rules as (
    select * from {{ ref('qof_register_rules') }}
),

events as (
    select supplier, practice_code, patient_id, cluster, event_date, episode
    from {{ ref('int_qof_events') }}
    where cluster in (
        select diagnosis_cluster from rules
        union select resolved_cluster from rules
        union select downstage_cluster from rules
        union select treatment_cluster from rules
    )
),

diagnoses as (
    select
        p.supplier,
        p.practice_code,
        p.patient_id,
        p.reference_date,
        r.register,
        min(e.event_date) as first_diagnosis_date,
        max(e.event_date) filter (
            where not r.first_or_new_episode_only or {{ im1_is_first_or_new_episode('e.episode') }}
        ) as latest_diagnosis_date
    from population as p
    inner join events as e
        on e.supplier = p.supplier and e.practice_code = p.practice_code and e.patient_id = p.patient_id
       and e.event_date <= p.reference_date
    inner join rules as r on r.diagnosis_cluster = e.cluster
    group by p.supplier, p.practice_code, p.patient_id, p.reference_date, r.register
),

later as (
    -- resolved / down-staging codes after the latest diagnosis, and treatment in its window
    select
        d.supplier,
        d.practice_code,
        d.patient_id,
        d.reference_date,
        d.register,
        max(e.event_date) filter (where e.cluster = r.resolved_cluster) as resolved_date,
        max(e.event_date) filter (where e.cluster = r.downstage_cluster) as downstaged_date,
        max(e.event_date) filter (
            where e.cluster = r.treatment_cluster
              and e.event_date > {{ im1_months_before('p.reference_date', 'r.treatment_months') }}
        ) as latest_treatment_date
    from diagnoses as d
    inner join rules as r on r.register = d.register
    inner join population as p
        on p.supplier = d.supplier and p.practice_code = d.practice_code and p.patient_id = d.patient_id
       and p.reference_date = d.reference_date
    inner join events as e
        on e.supplier = d.supplier and e.practice_code = d.practice_code and e.patient_id = d.patient_id
    where e.event_date <= d.reference_date
      and (
           (e.cluster in (r.resolved_cluster, r.downstage_cluster) and e.event_date > d.latest_diagnosis_date)
           or e.cluster = r.treatment_cluster
      )
    group by d.supplier, d.practice_code, d.patient_id, d.reference_date, d.register
),

judged as (
    select
        p.supplier,
        p.practice_code,
        p.patient_id,
        p.person_key,
        p.reference_date,
        p.reference_kind,
        p.qof_year,
        d.register,
        p.age_years,
        d.first_diagnosis_date,
        d.latest_diagnosis_date,
        l.resolved_date,
        l.downstaged_date,
        l.latest_treatment_date,
        case
            when d.latest_diagnosis_date is null then 'no_first_or_new_episode'
            when r.diagnosed_on_or_after is not null and d.latest_diagnosis_date < r.diagnosed_on_or_after
                then 'before_2006'
            when r.treatment_cluster is not null and l.latest_treatment_date is null then 'no_treatment'
            when l.downstaged_date is not null then 'downstaged'
            when l.resolved_date is not null then 'resolved'
            when p.age_years < r.min_age then 'under_age'
            else 'on_register'
        end as register_status
    from diagnoses as d
    inner join rules as r on r.register = d.register
    inner join population as p
        on p.supplier = d.supplier and p.practice_code = d.practice_code and p.patient_id = d.patient_id
       and p.reference_date = d.reference_date
    left join later as l
        on l.supplier = d.supplier and l.practice_code = d.practice_code and l.patient_id = d.patient_id
       and l.reference_date = d.reference_date and l.register = d.register
)

select
    *,
    register_status = 'on_register' as is_on_register
from judged
