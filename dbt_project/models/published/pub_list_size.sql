{#- Registered patients as NHS England's PRGP publishes them, in 5-year age bands (0-4 ... 90-94,
    95+, ALL) by sex (MALE, FEMALE, ALL) for GP practices and their PCN, sub-ICB location and ICB,
    after the NHS small-number rule: macros/list_size.sql pub_list_size_rollup. -#}
{{ pub_list_size_rollup('mart_list_size', 'age_band', 'age_band_order', 20) }}
