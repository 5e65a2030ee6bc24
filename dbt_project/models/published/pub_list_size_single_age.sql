{#- Registered patients as NHS England's PRGP publishes them by single year of age ('0' ... '94',
    '95+', ALL) and sex (MALE, FEMALE, ALL) for GP practices and their PCN, sub-ICB location and
    ICB, after the NHS small-number rule: macros/list_size.sql pub_list_size_rollup. -#}
{{ pub_list_size_rollup('mart_list_size_single_age', 'age', 'age_order', 96) }}
