"""The feed configuration is typed and validated; errors name the field and the reason."""

from __future__ import annotations

import textwrap

import pytest

from im1.config import FeedConfigError, load_config, parse_config

pytestmark = pytest.mark.unit  # no service: `make test-unit` runs it

GOOD = {
    "version": 1,
    "feeds": [
        {
            "id": "emis_a81001",
            "supplier": "emis",
            "transport": {"kind": "sftp", "host": "sftp.example", "port": 22, "path": "/IM1/sftp/x",
                          "conn_id": "sftp_a81001"},
            "pgp_conn_id": "pgp_a81001",
            "sharing_agreement_guid": "45E7CD20-EE37-41AB-90D6-DC9D4B03D102",
            "organisations": [{"ods_code": "A81001", "supplier_org_id": "{D77C65E1-E100-4272-9386-F4FC383D8759}"}],
        },
        {
            "id": "tpp_b82001",
            "supplier": "tpp",
            "transport": {"kind": "folder", "path": "/data/tpp"},
            "organisations": [{"ods_code": "B82001"}],
        },
    ],
}


def _with(**changes):
    import copy

    cfg = copy.deepcopy(GOOD)
    for path, value in changes.items():
        node = cfg
        keys = path.split("__")
        for k in keys[:-1]:
            node = node[int(k)] if k.isdigit() else node[k]
        last = keys[-1]
        if value is KeyError:
            del node[int(last) if last.isdigit() else last]
        elif last.isdigit():
            node[int(last)] = value
        else:
            node[last] = value
    return cfg


def test_valid_config_parses_with_defaults():
    cfg = parse_config(GOOD)
    emis = cfg.feed("emis_a81001")
    assert emis.dag_id == "im1_ingest__emis_a81001"
    assert emis.timezone == "Europe/London" and emis.catchup is False and emis.retries == 3
    assert emis.pool == "im1_emis_sftp_example_22"
    assert cfg.feed("tpp_b82001").supplier_org_id(cfg.feed("tpp_b82001").organisations[0]) == "B82001"


@pytest.mark.parametrize(
    ("changes", "where", "why"),
    [
        ({"feeds__0__organisations__0__ods_code": "A8100"}, "feeds[0].organisations[0].ods_code",
         "not an ODS practice code"),
        ({"feeds__0__transport__port": 70000}, "feeds[0].transport.port", "less than or equal to 65535"),
        ({"feeds__0__supplier": "vision"}, "feeds[0].supplier", "'emis' or 'tpp'"),
        ({"feeds__0__pgp_conn_id": KeyError}, "feeds[0]", "pgp_conn_id: EMIS files are PGP-encrypted"),
        ({"feeds__0__organisations__0__supplier_org_id": "D77C65E1"}, "feeds[0]",
         "organisations[0].supplier_org_id: EMIS needs the OrganisationGuid"),
        ({"feeds__0__transport__path": "relative/path"}, "feeds[0].transport.path", "absolute remote path"),
        ({"feeds__0__trasnport": {}}, "feeds[0].trasnport", "unknown field"),
        ({"feeds__1__id": "emis_a81001"}, "feeds", "feed id used twice"),
        ({"feeds__0__timezone": "Mars/Olympus"}, "feeds[0].timezone", "not a known IANA time zone"),
        ({"feeds__1__organisations": [{"ods_code": "B82001"}, {"ods_code": "B82002"}]}, "feeds[1]",
         "covers exactly one organisation"),
        ({"feeds__1__extract": "multi_organisation"}, "feeds[1]", "not supported for TPP feeds yet"),
        ({"feeds__0__sharing_agreement_guid": "{45E7CD20-EE37-41AB-90D6-DC9D4B03D102}"},
         "feeds[0].sharing_agreement_guid", "without braces"),
    ],
)
def test_invalid_config_names_field_and_reason(changes, where, why):
    with pytest.raises(FeedConfigError) as err:
        parse_config(_with(**changes), "feeds.yaml")
    msg = str(err.value)
    assert "feeds.yaml" in msg
    assert where in msg, msg
    assert why in msg, msg


def test_load_config_reports_yaml_errors_and_missing_files(tmp_path):
    with pytest.raises(FeedConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("feeds: [\n")
    with pytest.raises(FeedConfigError, match="not valid YAML"):
        load_config(bad)


def test_environment_references_are_expanded(tmp_path, monkeypatch):
    f = tmp_path / "feeds.yaml"
    f.write_text(textwrap.dedent("""
        version: 1
        feeds:
          - id: emis_a81001
            supplier: emis
            transport: {kind: sftp, host: "${SFTP_HOST}", port: ${SFTP_PORT:-2200}, path: /x, conn_id: c}
            pgp_conn_id: p
            sharing_agreement_guid: 45E7CD20-EE37-41AB-90D6-DC9D4B03D102
            organisations: [{ods_code: A81001, supplier_org_id: "{D77C65E1-E100-4272-9386-F4FC383D8759}"}]
    """))
    monkeypatch.setenv("SFTP_HOST", "sftp.internal")
    monkeypatch.delenv("SFTP_PORT", raising=False)
    feed = load_config(f).feeds[0]
    assert (feed.transport.host, feed.transport.port) == ("sftp.internal", 2200)
    monkeypatch.delenv("SFTP_HOST")
    with pytest.raises(FeedConfigError, match="SFTP_HOST is referenced but not set"):
        load_config(f)


def test_shipped_config_is_valid():
    cfg = load_config()
    assert cfg.feeds, "include/feeds.yaml should declare at least the demo feed"
