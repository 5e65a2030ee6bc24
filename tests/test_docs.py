"""``make docs`` (``im1 docs``): dbt docs generated against the real warehouse and published, then both
docs sites served over HTTP on loopback; publishing replaces files atomically."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from im1 import docs, paths
from im1dev import docs as local_docs


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, ""


def test_make_docs_builds_the_dbt_docs_and_serves_both_sites(warehouse, tmp_path, capsys):
    assert local_docs.run_docs(port=0, build=True, serve_forever=False) == 0
    out = capsys.readouterr().out
    assert "dbt docs:" in out and "/dbt/static_index.html" in out
    site = paths.dbt_docs_dir()
    manifest = json.loads((site / "manifest.json").read_text())
    assert "model.im1.mart_list_size" in manifest["nodes"]
    assert "mart_list_size" in (site / "static_index.html").read_text()

    gx = tmp_path / "gx_site"
    gx.mkdir()
    (gx / "index.html").write_text("<html>expectations</html>")
    srv = local_docs.serve({"dbt": site, "gx": gx}, port=0)
    base = f"http://127.0.0.1:{srv.server_address[1]}"
    try:
        status, body = _get(f"{base}/dbt/static_index.html")
        assert status == 200 and "mart_list_size" in body
        status, body = _get(f"{base}/dbt/manifest.json")
        assert status == 200 and json.loads(body)["nodes"]
        assert _get(f"{base}/gx/index.html") == (200, "<html>expectations</html>")
        status, body = _get(f"{base}/")
        assert status == 200 and 'href="/dbt/"' in body and 'href="/gx/"' in body
        assert _get(f"{base}/dbt/%2e%2e/%2e%2e/secrets/connections.json")[0] == 404
        assert _get(f"{base}/elsewhere/x")[0] == 404
    finally:
        srv.shutdown()
        srv.server_close()


def test_publish_needs_a_site_and_replaces_files_whole(tmp_path):
    target, dest = tmp_path / "target", tmp_path / "site"
    target.mkdir()
    with pytest.raises(FileNotFoundError, match="dbt docs generate"):
        docs.publish(target, dest)
    (target / "static_index.html").write_text("v1")
    (target / "manifest.json").write_text("{}")
    assert {p.name for p in docs.publish(target, dest)} == {"static_index.html", "manifest.json"}
    (target / "static_index.html").write_text("v2")
    docs.publish(target, dest)
    assert (dest / "static_index.html").read_text() == "v2"
    assert sorted(p.name for p in dest.iterdir()) == ["manifest.json", "static_index.html"]  # no temp files left
    # the site (it documents the warehouse) is its owner's alone
    assert dest.stat().st_mode & 0o077 == 0
    assert all(p.stat().st_mode & 0o077 == 0 for p in dest.iterdir())
