{#- Pseudonymous person keys: HMAC-SHA256 (RFC 2104) of the normalised NHS number with a secret key.

    PostgreSQL 16 has sha256() but no hmac() without pgcrypto, so HMAC is built from sha256():
        HMAC(K, m) = sha256((K0 xor opad) || sha256((K0 xor ipad) || m))
    where K0 is the key hashed with sha256 when longer than the block (64 bytes), then padded
    with zero bytes to 64; ipad = 0x36 and opad = 0x5c repeated. tests/dbt/test_pseudonym.py
    proves it equals Python's hmac.new(key, msg, hashlib.sha256).

    The secret never appears in SQL text (compiled SQL, the manifest, logs and the docs site all
    keep model SQL): each dbt connection receives it as the session setting im1.pseudonym_key
    through PGOPTIONS, which the im1 runtime derives from IM1_PSEUDONYM_KEY (im1.runtime). A key
    of at least 32 hexadecimal characters is used as bytes, anything else as UTF-8 text. -#}

{% macro im1_hmac_key_block(key, pad) -%}
    {#- 64 bytes: the block-sized key (K0) xor'ed byte by byte with pad (54 = ipad, 92 = opad).
        Uncorrelated, so PostgreSQL evaluates it once per statement. -#}
    (select decode(string_agg(lpad(to_hex(get_byte(k0.block, i) # {{ pad }}), 2, '0'), '' order by i), 'hex')
     from (select kb.k || decode(repeat('00', 64 - length(kb.k)), 'hex') as block
           from (select case when length(kr.k) > 64 then sha256(kr.k) else kr.k end as k
                 from (select {{ key }} as k) as kr) as kb) as k0
     cross join generate_series(0, 63) as i)
{%- endmacro %}

{#- Hex HMAC-SHA256 of ``message`` (a bytea SQL expression) with ``key`` (a bytea SQL expression). -#}
{% macro im1_hmac_sha256(message, key) -%}
    encode(sha256({{ im1_hmac_key_block(key, 92) }} || sha256({{ im1_hmac_key_block(key, 54) }} || {{ message }})), 'hex')
{%- endmacro %}

{#- The pseudonymisation key (bytea) from the session setting; null when it is not set. -#}
{% macro im1_pseudonym_key() -%}
    (select case when s.v ~ '^([0-9A-Fa-f]{2}){16,}$' then decode(s.v, 'hex') else convert_to(s.v, 'UTF8') end
     from (select nullif(current_setting('im1.pseudonym_key', true), '') as v) as s)
{%- endmacro %}

{#- The NHS number as 10 digits (spaces and hyphens removed), or null when it is not 10 digits. -#}
{% macro im1_normalised_nhs_number(nhs_number) -%}
    nullif(substring(regexp_replace(coalesce({{ nhs_number }}, ''), '[[:space:]-]', '', 'g') from '^[0-9]{10}$'), '')
{%- endmacro %}

{#- person_key: 64 hex characters, or null without a valid NHS number. -#}
{% macro im1_person_key(nhs_number) -%}
    case when {{ im1_normalised_nhs_number(nhs_number) }} is not null
         then {{ im1_hmac_sha256("convert_to(" ~ im1_normalised_nhs_number(nhs_number) ~ ", 'UTF8')", im1_pseudonym_key()) }}
    end
{%- endmacro %}

{#- Pre-hook of models that compute person_key: fail with a clear message when the key is missing. -#}
{% macro im1_require_pseudonym_key() -%}
    do $im1$
    begin
        if coalesce(current_setting('im1.pseudonym_key', true), '') = '' then
            raise exception 'person_key needs the pseudonymisation key, and this session has none'
                using hint = 'Set IM1_PSEUDONYM_KEY (hex, 32+ characters) for dbt: the im1 runtime passes it to '
                             'PostgreSQL as the session setting im1.pseudonym_key through PGOPTIONS '
                             '(`eval "$(im1 env)"` or `im1 run -- dbt ...` do this for you).';
        end if;
    end
    $im1$
{%- endmacro %}
