"""COPY staging: by header name, metadata filled, RFC 4180 content, unknown columns kept."""

from __future__ import annotations

import psycopg
import pytest

from im1.ingest import ledger
from im1.ingest.load import HeaderError, StagedFile, copy_file, set_load_context
from im1.warehouse import LOADER


@pytest.fixture()
def loader_conn(warehouse):
    with psycopg.connect(warehouse.role_url(LOADER)) as conn:
        yield conn
        conn.rollback()


def _batch(conn, key):
    row = ledger.register_batch(conn, feed_id="t", supplier="emis", batch_key=key, organisation="Z90001",
                                extract_ts="2026-11-02 02:00", file_count=1)
    fid = ledger.record_fetched_file(conn, batch_id=row.batch_id, file_name=f"{key}.csv", table_name="Admin_Location",
                             remote_path=None, archive_path=None, size=1, sha256="x")
    return row.batch_id, fid


def test_copy_maps_by_name_and_fills_metadata(loader_conn, tmp_path):
    f = tmp_path / "loc.csv"
    # columns in a different order than the spec, a quoted comma, a quote and a newline inside fields,
    # non-ASCII text and an extra column the spec does not know
    f.write_bytes(
        '"ProcessingId","LocationName","LocationGuid","Deleted","Brand New Column"\r\n'
        '"7","Surgery, Main","{A}","false","x"\r\n'
        '"8","The ""Old"" Mill\r\nAnnex","{B}","false",""\r\n'
        '"9","Clínica Zoë","{C}","true","y"\r\n'.encode()
    )
    batch_id, file_id = _batch(loader_conn, "copy-test")
    set_load_context(loader_conn, feed_id="t", organisation="Z90001", batch_id=batch_id)
    sf = StagedFile(table="Admin_Location", path=f, file_id=file_id)
    assert copy_file(loader_conn, "raw_emis", sf) == 3
    assert sf.unknown_columns == ["Brand New Column"]
    rows = loader_conn.execute(
        'select locationguid, locationname, processingid, "brand new column", _feed_id, _organisation, '
        "_batch_id, _file_id, _row_number from raw_emis.admin_location where _file_id = %s order by _row_number",
        (file_id,),
    ).fetchall()
    assert rows == [
        ("{A}", "Surgery, Main", "7", "x", "t", "Z90001", batch_id, file_id, 1),
        # a quoted empty field stays an empty string in raw (staging turns '' into NULL)
        ("{B}", 'The "Old" Mill\r\nAnnex', "8", "", "t", "Z90001", batch_id, file_id, 2),
        ("{C}", "Clínica Zoë", "9", "y", "t", "Z90001", batch_id, file_id, 3),
    ]


def test_header_problems_are_specific(loader_conn, tmp_path):
    batch_id, file_id = _batch(loader_conn, "hdr-test")
    set_load_context(loader_conn, feed_id="t", organisation="Z90001", batch_id=batch_id)
    cases = {
        b"": "empty",
        b'"LocationGuid","LocationGuid"\r\n"{A}","{A}"\r\n': "more than once",
        b'"LocationGuid","_batch_id"\r\n"{A}","1"\r\n': "reserved column name",
    }
    for i, (content, words) in enumerate(cases.items()):
        f = tmp_path / f"bad{i}.csv"
        f.write_bytes(content)
        with pytest.raises(HeaderError, match=words):
            copy_file(loader_conn, "raw_emis", StagedFile(table="Admin_Location", path=f, file_id=file_id))


def test_malformed_csv_fails_the_copy_and_loads_nothing(loader_conn, tmp_path):
    f = tmp_path / "broken.csv"
    f.write_bytes(b'"LocationGuid","LocationName"\r\n"{A}","ok"\r\n"{B}","unterminated\r\n')
    batch_id, file_id = _batch(loader_conn, "malformed-test")
    set_load_context(loader_conn, feed_id="t", organisation="Z90001", batch_id=batch_id)
    with pytest.raises(psycopg.errors.BadCopyFileFormat):
        copy_file(loader_conn, "raw_emis", StagedFile(table="Admin_Location", path=f, file_id=file_id))
    loader_conn.rollback()
    n = loader_conn.execute("select count(*) from raw_emis.admin_location where _file_id = %s", (file_id,))
    assert n.fetchone() == (0,)


def test_row_numbers_restart_for_each_file_in_one_transaction(loader_conn, tmp_path):
    batch_id, first = _batch(loader_conn, "rownum-test")
    second = ledger.record_fetched_file(loader_conn, batch_id=batch_id, file_name="second.csv", table_name="Admin_Location",
                                remote_path=None, archive_path=None, size=1, sha256="y")
    set_load_context(loader_conn, feed_id="t", organisation="Z90001", batch_id=batch_id)
    for fid, n in ((first, 25_000), (second, 3)):
        f = tmp_path / f"f{fid}.csv"
        f.write_text('"LocationGuid"\r\n' + "".join(f'"{{{i}}}"\r\n' for i in range(n)))
        assert copy_file(loader_conn, "raw_emis", StagedFile(table="Admin_Location", path=f, file_id=fid)) == n
    got = loader_conn.execute(
        "select _file_id, min(_row_number), max(_row_number), count(distinct _row_number), count(distinct _loaded_at)"
        " from raw_emis.admin_location where _batch_id = %s group by 1 order by 1", (batch_id,)).fetchall()
    assert got == [(first, 1, 25_000, 25_000, 1), (second, 1, 3, 3, 1)]


def test_load_seq_follows_commit_order_per_table(warehouse, tmp_path):
    """A second load into the same table waits for the first and gets a higher _load_seq: the
    watermark incremental models rely on never lets an in-flight batch be skipped."""
    import threading
    import time

    f = tmp_path / "seq.csv"
    f.write_text('"LocationGuid"\r\n"{Z}"\r\n')
    first = psycopg.connect(warehouse.role_url(LOADER))
    second = psycopg.connect(warehouse.role_url(LOADER))
    try:
        b1, f1 = _batch(first, "seq-1")
        first.commit()
        b2, f2 = _batch(second, "seq-2")
        second.commit()
        set_load_context(first, feed_id="t", organisation="Z90001", batch_id=b1)
        copy_file(first, "raw_emis", StagedFile(table="Admin_Location", path=f, file_id=f1))  # holds the lock
        done = threading.Event()

        def later():
            set_load_context(second, feed_id="t", organisation="Z90001", batch_id=b2)
            copy_file(second, "raw_emis", StagedFile(table="Admin_Location", path=f, file_id=f2))
            second.commit()
            done.set()

        t = threading.Thread(target=later)
        t.start()
        time.sleep(0.5)
        assert not done.is_set(), "the second writer must wait for the first to commit"
        first.commit()
        t.join(10)
        assert done.is_set()
        seqs = dict(first.execute("select _file_id, _load_seq from raw_emis.admin_location where _file_id in (%s, %s)",
                                  (f1, f2)).fetchall())
        assert seqs[f2] > seqs[f1]
    finally:
        first.close()
        second.close()


def test_a_first_line_sharing_no_name_with_the_table_is_not_taken_as_its_header():
    from im1.ingest.load import HeaderError, check_header

    record = ["{0B1C2D3E-4F50-4617-8899-AABBCCDDEEF1}", "1990-02-01", "Smith"]
    with pytest.raises(HeaderError, match="header row is missing") as err:
        check_header("Admin_Patient", record, ["patientguid", "dateofbirth", "surname", "_batch_id"], "f.csv")
    assert not [v for v in record if v in str(err.value)]
    # a real header with one new column is a header (the new column is kept)
    assert check_header("Admin_Patient", ["PatientGuid", "NewColumn"], ["patientguid", "_batch_id"], "f.csv") == [
        "NewColumn"]
