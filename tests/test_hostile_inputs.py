"""Hostile inputs (issue 12): each test here failed before its fix.

Defect 8: filters too long for the kernel's bytecode or nested deeper than the parser
recurses are FilterErrors (struct.error and RecursionError before).
Defect 9: classic record files with hostile metadata are RecordErrors naming the line
and field; read_salvage salvages; recordread prints one line.
Defect 11: every writer refuses to write through a symlink another user planted, and
replaces an existing file without writing into it (web10g._files.create_output).
"""
from __future__ import annotations

import datetime as _dt
import os
import socket
import stat
import sys
import time

import numpy as np
import pytest

import web10g
from web10g import filter as F
from web10g import mib, record
from web10g._files import UnsafeOutputError, create_output
from web10g.cli import main as web10g_main
from web10g.errors import FilterError
from web10g.record import RecordError, RecordReader, RecordWriter

SECRET = b"root's 0600 secret\n"
T0 = 1_700_000_000 * 10**9 + 250_000_000


def run(capsys, *argv):
    code = web10g_main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# ----------------------------------------------------------------------- defect 8: filters

def test_and_chain_past_the_bytecode_limit_is_a_filter_error() -> None:
    # 8,192 8-byte ops: a `no` offset of 65,536 no longer fits its u16 (was struct.error)
    text = " and ".join(f"sport = :{i}" for i in range(8192))
    with pytest.raises(FilterError) as info:
        F.compile(text)
    msg = str(info.value)
    assert "filter too long" in msg and "65,536 bytes" in msg and "65,530" in msg
    assert "split it" in msg or "several reads" in msg


@pytest.mark.parametrize("terms", [5462, 6000, 20000])
def test_or_chain_past_the_bytecode_limit_is_a_filter_error(terms: int) -> None:
    text = " or ".join(f"sport = :{i % 65536}" for i in range(terms))
    with pytest.raises(FilterError, match="filter too long: its bytecode would be"):
        F.request_attr(text)


def test_largest_filter_that_fits_still_compiles() -> None:
    n = F.MAX_BYTECODE // 8
    bc = F.compile(" and ".join(f"sport = :{i}" for i in range(n)))
    assert len(bc) == 8 * n <= F.MAX_BYTECODE
    with pytest.raises(FilterError, match="too long"):
        F.compile(" and ".join(f"sport = :{i}" for i in range(n + 1)))


@pytest.mark.parametrize("text", [
    "(" * 330 + "sport = :1" + ")" * 330,
    "not " * 990 + "sport = :1",
    "! " * 5000 + "sport = :1",
    "(" * 100_000,
    "not (" * 200 + "sport = :1" + ")" * 200,
])
def test_deep_nesting_is_a_filter_error_not_recursion(text: str) -> None:
    for fn in (F.parse, F.compile, F.to_python):
        with pytest.raises(FilterError, match="nested too deeply") as info:
            fn(text)
        assert info.value.position is not None  # the caret points into the text
    rows = np.zeros(3, mib.dtype(["SegsOut"], identity=True))
    with pytest.raises(FilterError, match="nested too deeply"):
        F.mask(text, rows)


def test_alternating_and_or_nesting_is_limited_too() -> None:
    x = "sport = :1"
    for i in range(F.MAX_DEPTH + 5):
        x = f"dport = :{i} and ({x} or sport = :3)"
    with pytest.raises(FilterError, match="nested too deeply"):
        F.compile(x)


def test_expressions_built_in_python_have_the_same_limit() -> None:
    e = F.sport(1)
    with pytest.raises(FilterError, match="nested too deeply"):
        for _ in range(990):
            e = ~e
    e = F.sport(1)
    with pytest.raises(FilterError, match="nested too deeply"):
        for i in range(990):
            e = (e | F.dport(i)) & F.sport(i) if i % 2 else e & F.dport(i) | F.sport(i)


def test_filters_at_the_depth_limit_work_everywhere_from_a_deep_stack() -> None:
    """MAX_DEPTH levels leave room below Python's recursion limit for the caller."""
    texts = ["not " * F.MAX_DEPTH + "sport = :1",
             "(" * F.MAX_DEPTH + "sport = :1" + ")" * F.MAX_DEPTH]
    x = "sport = :1"
    for i in range(F.MAX_DEPTH // 2 - 1):
        x = f"dport = :{i} and ({x} or sport = :3)"
    texts.append(x)
    rows = np.zeros(4, mib.dtype(["SegsOut"], identity=True))
    rows["family"], rows["local_port"] = socket.AF_INET, [1, 2, 3, 1]

    def deep(n: int) -> None:  # the caller already uses ~300 frames
        if n:
            return deep(n - 1)
        for t in texts:
            e = F.parse(t)
            assert F.depth(e) <= F.MAX_DEPTH
            F.compile(e)
            repr(e)
            F.to_python(e)(socket.AF_INET, bytes(16), 1, bytes(16), 2)
            F.mask(e, rows)

    deep(300)


def test_cli_reports_filter_errors_in_one_line(capsys) -> None:
    for text, words in (("(" * 330 + "sport = :1" + ")" * 330, "nested too deeply"),
                        (" and ".join(f"sport = :{i}" for i in range(8192)), "too long")):
        code, _, err = run(capsys, "listconns", "--backend", "sock_diag", "--filter", text)
        assert code == 1 and words in err and "Traceback" not in err


# ---------------------------------------------------------------- defect 9: record files

def _rows(k: int = 2) -> np.ndarray:
    rows = np.zeros(k, mib.dtype(["SegsOut", "State"], identity=True, timestamp=True))
    rows["timestamp"], rows["SegsOut"], rows["State"] = T0, np.arange(k) + 5, 5
    rows["local_addr"][:, :4] = [10, 0, 0, 1]
    return rows


def _with_metadata(lines: str, k: int = 2) -> bytes:
    """A whole, checksummed file (head layout) whose metadata is ``lines``."""
    body = record_bytes(k)
    h = int.from_bytes(body[1:3], "little")
    ext = ("web10g-record 1\n" + lines).encode()
    data = b"\x00" + len(ext).to_bytes(2, "little") + ext + body[3 + h:-2]
    return data + record.checksum(data).to_bytes(2, "big")


def record_bytes(k: int = 2) -> bytes:
    import io

    buf = io.BytesIO()
    with RecordWriter(buf, byteorder="little", metadata=False) as w:
        w.write(_rows(k))
    return buf.getvalue()


@pytest.mark.parametrize("lines, field", [
    ("cid=\u00b2\n", "cid"),                       # str.isdigit() accepts it; int() does not
    ("cid=" + "1" * 23 + "\n", "cid"),            # was OverflowError
    ("cid=18446744073709551616\n", "cid"),        # one past u64
    ("cid=" + "9" * 5000 + "\n", "cid"),          # int() refuses > 4300 digits
    ("cid=\u0663\n", "cid"),                      # ARABIC-INDIC DIGIT THREE
    ("cid=-1\n", "cid"),
    ("cid= 5\n", "cid"),
    ("cid=5\ncid=6\n", "cid"),                    # which one? neither
    ("addr_type=\u0661\n", "addr_type"),
    ("addr_type=3\n", "addr_type"),
    ("layout=kernel-9.9\n", "layout"),
    ("vars=SegsOut:u32\n", "vars"),
    ("garbage\n", "key=value"),
])
def test_bad_metadata_is_a_record_error_and_salvage_keeps_the_records(lines, field) -> None:
    data = _with_metadata(lines)
    with pytest.raises(RecordError) as info:
        RecordReader(data)
    msg = str(info.value)
    assert field in msg
    if field != "vars":
        assert "metadata line" in msg and info.value.offset > 3
    rows, err = record.read_salvage(data)
    assert err is not None and field in str(err)
    assert len(rows) == 2 and rows["SegsOut"].tolist() == [5, 6]  # salvaged, not raised
    assert (rows["cid"] == 0).all() and (rows["family"] == socket.AF_INET).all()


def test_largest_cid_is_accepted_and_kept() -> None:
    rows = RecordReader(_with_metadata("cid=18446744073709551615\naddr_type=1\n")).rows()
    assert (rows["cid"] == 2**64 - 1).all() and (rows["family"] == socket.AF_INET).all()


def test_salvage_counts_every_problem_it_skipped() -> None:
    data = bytearray(_with_metadata("cid=\u00b2\naddr_type=9\n"))
    data[-5] ^= 0xFF  # and the checksum no longer matches
    rows, err = record.read_salvage(bytes(data))
    assert len(rows) == 2 and err is not None
    assert "3 problems in all" in str(err) and "2 bad metadata line(s) skipped" in str(err)


def test_writer_refuses_a_cid_it_could_not_read_back(tmp_path) -> None:
    for cid in (-1, 2**64, 1.5, True):
        with pytest.raises(ValueError, match="cid"):
            RecordWriter(tmp_path / "r", cid=cid)


def test_recordread_reports_bad_metadata_in_one_line(capsys, tmp_path) -> None:
    path = tmp_path / "bad-record"
    path.write_bytes(_with_metadata("cid=\u00b2\n"))
    code, out, err = run(capsys, "recordread", str(path))
    assert code == 1 and out == "" and "Traceback" not in err
    assert len(err.splitlines()) == 1 and "cid" in err and "metadata line 2" in err
    code, out, err = run(capsys, "recordread", "--salvage", "--all", str(path))
    assert code == 1 and "Traceback" not in err and "cid" in err
    assert out.count("Timestamp sec:") == 2 and "SegsOut:  6" in out


# ------------------------------------------------------------ defect 11: output files

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="plants another uid's symlink")
OTHER = 65534  # nobody


@pytest.fixture
def planted(tmp_path):
    """(shared dir, link name -> root's 0600 file): a sticky world-writable directory
    owned by another user, in which that user planted a symlink to root's secret."""
    target = tmp_path / "secret"
    target.write_bytes(SECRET)
    target.chmod(0o600)
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    os.chown(shared, OTHER, OTHER)

    def plant(name: str) -> str:
        link = shared / name
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, link)
        os.lchown(link, OTHER, OTHER)
        return str(link)

    yield shared, plant
    assert target.read_bytes() == SECRET, "the writer wrote through the planted symlink"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def _untouched(link: str) -> None:
    assert os.path.islink(link)
    assert not [n for n in os.listdir(os.path.dirname(link)) if n.endswith(".tmp")]


@needs_root
def test_recordwrite_default_file_is_not_written_through_a_symlink(planted, capsys,
                                                                    monkeypatch) -> None:
    shared, plant = planted
    link = plant("test-record")
    lst = socket.create_server(("127.0.0.1", 0))
    cli = socket.create_connection(lst.getsockname())
    srv, _ = lst.accept()
    try:
        with web10g.open("sock_diag") as a:
            rows = a.list_conns(states="all")
        cid = int(rows[rows["local_port"] == cli.getsockname()[1]]["cid"][0])
        monkeypatch.chdir(shared)
        code, _, err = run(capsys, "recordwrite", "--backend", "sock_diag", str(cid))
    finally:
        for s in (cli, srv, lst):
            s.close()
    assert code == 1 and "Traceback" not in err
    assert "test-record: is a symbolic link" in err and "remove the link" in err
    _untouched(link)


@needs_root
def test_record_writer_refuses_a_planted_symlink(planted) -> None:
    _, plant = planted
    link = plant("rec")
    with pytest.raises(UnsafeOutputError) as info:
        RecordWriter(link)
    assert info.value.filename == link and "symbolic link" in str(info.value)
    _untouched(link)


@needs_root
def test_recorder_refuses_a_planted_symlink(planted) -> None:
    from web10g.recording import Recorder

    _, plant = planted
    link = plant("x.w10g")
    with web10g.open("sock_diag") as agent, pytest.raises(UnsafeOutputError):
        Recorder(link, agent)
    _untouched(link)


@needs_root
def test_logger_and_convert_refuse_a_planted_symlink(planted, capsys, tmp_path) -> None:
    _, plant = planted
    link = plant("out.csv")
    code, _, err = run(capsys, "logger", "--backend", "sock_diag", "--count", "1",
                       "-o", link)
    assert code == 1 and "symbolic link" in err and "Traceback" not in err
    rec = tmp_path / "good-record"
    rec.write_bytes(record_bytes())
    code, _, err = run(capsys, "convert", str(rec), link)
    assert code == 1 and "symbolic link" in err and "Traceback" not in err
    _untouched(link)


@needs_root
def test_parquet_writers_refuse_planted_symlinks(planted) -> None:
    pytest.importorskip("pyarrow")
    from web10g.collector import parquet as pqw

    shared, plant = planted
    rows = RecordReader(record_bytes()).rows()
    link = plant("out.parquet")
    with pytest.raises(UnsafeOutputError):
        pqw.write_file([rows], link)
    _untouched(link)
    # the dataset writer's temporary name is predictable: plant a link there too
    root, t_ns, wid = str(shared / "ds"), int(rows["timestamp"][0]), "w1"
    stamp = (_dt.datetime.fromtimestamp(t_ns / 1e9, tz=_dt.timezone.utc)
             .strftime("%Y%m%dT%H%M%S") + f".{t_ns // 1_000_000 % 1000:03d}Z")
    part = os.path.relpath(pqw.partition_dir(root, "h1", t_ns), shared)
    tmp_link = plant(os.path.join(part, f"{pqw.TMP_PREFIX}{stamp}-{wid}-0001-p{os.getpid()}"
                                        f"-1{pqw.TMP_SUFFIX}"))
    w = pqw.DatasetWriter(root, host="h1", dtype=rows.dtype, writer_id=wid)
    w.add(rows)
    with pytest.raises(UnsafeOutputError, match="symbolic link"):
        w.close()
    assert os.path.islink(tmp_link)  # neither followed nor removed


@needs_root
def test_plot_refuses_a_planted_symlink(planted) -> None:
    pytest.importorskip("matplotlib")
    from web10g.plot import plot

    _, plant = planted
    link = plant("out.png")
    with web10g.open("sock_diag") as agent:
        snaps = [agent.read_all(states="all")]
        time.sleep(0.02)
        snaps.append(agent.read_all(states="all"))
    with pytest.raises(UnsafeOutputError):
        plot(snaps, link)
    _untouched(link)


def test_existing_file_is_replaced_not_written_into(tmp_path) -> None:
    path = tmp_path / "rec"
    path.write_bytes(b"old")
    path.chmod(0o600)
    other = tmp_path / "hardlink"
    os.link(path, other)       # a hard link to the old file: must keep its contents
    with RecordWriter(path) as w:
        w.write(_rows())
    assert RecordReader(path).count == 2 and other.read_bytes() == b"old"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # never more permissive
    assert sorted(os.listdir(tmp_path)) == ["hardlink", "rec"]


def test_symlink_planted_while_writing_is_replaced_not_followed(tmp_path) -> None:
    target = tmp_path / "secret"
    target.write_bytes(SECRET)
    path = tmp_path / "out"
    path.write_bytes(b"old")
    f = create_output(path)
    f.write(b"new")
    path.unlink()
    os.symlink(target, path)   # swapped in after the checks, before the rename
    f.close()
    assert not path.is_symlink() and path.read_bytes() == b"new"
    assert target.read_bytes() == SECRET


def test_failed_writer_leaves_the_old_file_and_no_temporary(tmp_path) -> None:
    path = tmp_path / "out"
    path.write_bytes(b"old")
    with pytest.raises(KeyError), create_output(path) as f:
        f.write(b"half")
        raise KeyError
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["out"]


def test_non_regular_destinations_are_refused_but_dev_null_works(tmp_path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for bad, words in ((fifo, "is a FIFO"), (tmp_path, "is a directory")):
        with pytest.raises(UnsafeOutputError, match=words) as info:
            create_output(bad)
        assert info.value.filename == str(bad)
    with pytest.raises(FileExistsError, match="already exists"):
        create_output(__file__, overwrite=False)
    with create_output(os.devnull) as f:
        f.write(b"discarded")
    assert os.path.exists(os.devnull) and stat.S_ISCHR(os.stat(os.devnull).st_mode)


def test_new_files_are_created_exclusively_with_the_mode(tmp_path) -> None:
    old = os.umask(0o022)
    try:
        with create_output(tmp_path / "new", mode=0o640) as f:
            f.write(b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o640


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
