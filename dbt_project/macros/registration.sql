{#- Registered on date D (PRGP and QOF list definition, as the ground truth): a Regular
    registration with start_date <= D and (no end or end_date > D), alive on D (no death or
    death > D), born by D, not a dummy/test patient. ``reg`` and ``pat`` are aliases of
    int_registrations and int_patients. A registration ending on D is not counted on D. -#}
{% macro im1_registered_on(reg, pat, on) -%}
    ({{ reg }}.registration_type = 'Regular'
     and not {{ pat }}.is_dummy
     and {{ reg }}.start_date <= {{ on }}
     and ({{ reg }}.end_date is null or {{ reg }}.end_date > {{ on }})
     and ({{ pat }}.date_of_death is null or {{ pat }}.date_of_death > {{ on }})
     and {{ pat }}.date_of_birth <= {{ on }})
{%- endmacro %}

{#- ``months`` calendar months before date ``d`` (the same day, or the month's last day when the
    month is shorter), as a date: "the last 12 months" before R are (R - 12 months, R]. -#}
{% macro im1_months_before(d, months) -%}
    cast({{ d }} - make_interval(months => {{ months }}) as date)
{%- endmacro %}

{#- QOF's "first or new episode" (the depression register's DEPR_DAT): a code whose episode type
    is first, new or not recorded; review, ended, changed, evolved and flare-up codes are not
    episodes (the episode types as EMIS Web and SystmOne record them). -#}
{% macro im1_is_first_or_new_episode(episode) -%}
    (lower(trim(coalesce({{ episode }}, ''))) not in ('review', 'ended', 'changed', 'evolved', 'flare up'))
{%- endmacro %}
