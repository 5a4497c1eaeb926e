"""Output files that hold sequence numbers are not readable by other users.

SndUna, SndNxt, SndMax, RcvNxt, SndInitial and RecInitial let a local user inject data
into a connection; inet_diag never shows them and the ebpf backend withholds them from
other users. A root collector or logger writing them into a file that its umask leaves
world-readable would hand them out anyway: every writer takes others' permissions from
such a file (mode & 0640: its group may read) and leaves files without them as the umask
says."""
from __future__ import annotations

import io
import os
import stat
import subprocess
import sys

import numpy as np
import pytest

import web10g
from web10g import mib, record
from web10g._files import create_output, private_if_secret
from web10g.recording import Recorder


@pytest.fixture(autouse=True)
def umask_022():
    old = os.umask(0o022)          # what a root shell usually has: files 0644
    try:
        yield
    finally:
        os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_private_if_secret_only_for_sequence_columns(tmp_path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    with create_output(a) as fa, create_output(b) as fb:
        assert private_if_secret(fa, ["cid", "SegsOut", "RcvNxt"]) is True
        assert private_if_secret(fb, ["cid", "SegsOut", "rtt_us"]) is False
    assert mode(a) == 0o640 and mode(b) == 0o644
    with create_output("/dev/null") as null:    # a device is left as it is
        assert private_if_secret(null, ["SndUna"]) is False
    assert private_if_secret(io.BytesIO(), ["SndUna"]) is False
    assert mib.SEQUENCE_VARS == {"SndUna", "SndNxt", "SndMax", "RcvNxt", "SndInitial",
                                 "RecInitial"}


def test_a_replaced_file_becomes_private_too(tmp_path) -> None:
    p = tmp_path / "out"
    p.write_bytes(b"old")
    os.chmod(p, 0o644)
    with create_output(p) as f:                   # written beside it, renamed over it
        private_if_secret(f, ["SndNxt"])
        f.write(b"new")
    assert mode(p) == 0o640 and p.read_bytes() == b"new"


def head_rows(names: list[str]) -> np.ndarray:
    rows = np.zeros(2, mib.dtype(names, identity=True, timestamp=True))
    rows["timestamp"] = 1_700_000_000 * 10**9
    rows["local_port"], rows["rem_port"] = 22, 51000
    return rows


def test_record_files(tmp_path) -> None:
    head = mib.layout("head").flat_names()
    with record.RecordWriter(tmp_path / "seq", metadata=False) as w:
        w.write(head_rows(head))                  # SndUna & co. among the columns
    with record.RecordWriter(tmp_path / "plain", metadata=False) as w:
        w.write(head_rows(["SegsOut", "SegsIn"]))
    assert mode(tmp_path / "seq") == 0o640 and mode(tmp_path / "plain") == 0o644
    assert record.RecordReader(tmp_path / "seq").count == 2


def test_datasets_and_parquet_files(tmp_path) -> None:
    pq = pytest.importorskip("web10g.collector.parquet")
    pytest.importorskip("pyarrow")
    seq = head_rows(["SegsOut", "SndNxt"])
    plain = head_rows(["SegsOut"])
    for rows in (seq, plain):
        rows["cid"] = [1, 2]
    files = pq.write_dataset(iter([seq]), tmp_path / "ds-seq", host="h", writer_id="t")
    files += pq.write_dataset(iter([plain]), tmp_path / "ds-plain", host="h",
                              writer_id="t")
    got = {f.path: mode(f.path) for f in files}
    assert sorted(got.values()) == [0o640, 0o644], got
    assert all(v == 0o640 for p, v in got.items() if "ds-seq" in str(p))
    pq.write_file(iter([seq]), tmp_path / "seq.parquet")
    pq.write_file(iter([plain]), tmp_path / "plain.parquet")
    assert mode(tmp_path / "seq.parquet") == 0o640
    assert mode(tmp_path / "plain.parquet") == 0o644


def test_recordings_and_the_logger_on_a_backend_with_sequence_numbers(tmp_path,
                                                                       fake_kernel) -> None:
    fake_kernel.add_flow(("10.0.0.1", 22), ("192.0.2.7", 51000))
    with web10g.open("estats", peer=fake_kernel.portid) as agent:
        with Recorder(tmp_path / "estats.w10g", agent) as rec:
            rec.sample()
    assert mode(tmp_path / "estats.w10g") == 0o640
    with web10g.open("sock_diag") as agent:     # stock kernel: no sequence numbers
        assert not mib.SEQUENCE_VARS & {v.name for v in agent.variables()}
        with Recorder(tmp_path / "sd.w10g", agent) as rec:
            rec.sample()
    assert mode(tmp_path / "sd.w10g") == 0o644
    env = dict(os.environ, WEB10G_ESTATS_PEER=str(fake_kernel.portid))
    for name, extra in (("seq.csv", ["--vars", "SegsOut,SndUna"]),
                        ("plain.csv", ["--vars", "SegsOut"])):
        res = subprocess.run([sys.executable, "-m", "web10g", "logger", "--backend",
                              "estats", "--count", "1", "-i", "10", "--csv", "-o",
                              str(tmp_path / name), *extra],
                             capture_output=True, text=True, env=env, timeout=60)
        assert res.returncode == 0, res.stderr
    assert "SndUna" in (tmp_path / "seq.csv").read_text().splitlines()[0]
    assert mode(tmp_path / "seq.csv") == 0o640 and mode(tmp_path / "plain.csv") == 0o644


def test_convert_of_a_recording_with_sequence_numbers(tmp_path, fake_kernel) -> None:
    fake_kernel.add_flow(("10.0.0.1", 22), ("192.0.2.7", 51000))
    with web10g.open("estats", peer=fake_kernel.portid) as agent:
        with Recorder(tmp_path / "in.w10g", agent) as rec:
            rec.sample()
    for out, extra in (("all.csv", []), ("some.csv", ["--vars", "SegsOut"])):
        res = subprocess.run([sys.executable, "-m", "web10g", "convert",
                              str(tmp_path / "in.w10g"), str(tmp_path / out), *extra],
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
    assert mode(tmp_path / "all.csv") == 0o640 and mode(tmp_path / "some.csv") == 0o644
