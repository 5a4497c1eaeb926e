"""The ebpf backend against the real kernel: loader, reading, truth under loss, writes.

Needs root, kernel BTF and the built BPF object; skips with the reason otherwise. The
programs are loaded once for this module under their own pin directory and unloaded at
the end. Flows are this test's own (found by port), in fresh network namespaces where
loss is induced; nothing assumes the machine is quiet, nothing asserts on speed.
"""
from __future__ import annotations

import os
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import web10g
from web10g import errors, mib
from web10g import netns as _netns
from web10g.backends import ebpf_loader as L

REASON = L.unusable_reason()
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")

PIN = f"/sys/fs/bpf/web10g_test_{os.getpid()}"


@pytest.fixture(scope="module")
def pins() -> Iterator[str]:
    res = L.load(PIN, full=True)
    assert not res.already
    try:
        yield PIN
    finally:
        L.unload(PIN)


def _agent(pin_dir: str, netns: Any = None) -> Any:
    from web10g.backends.ebpf import EbpfAgent

    return EbpfAgent(netns=netns, pin_dir=pin_dir)


def _pair(lst: socket.socket, keep: list[Any]) -> tuple[socket.socket, socket.socket]:
    c = socket.create_connection(lst.getsockname()[:2])
    s, _ = lst.accept()
    keep += [c, s]
    return c, s


@pytest.fixture
def keep() -> Iterator[list[Any]]:
    k: list[Any] = []
    yield k
    for s in k:
        s.close()


# -- loader ------------------------------------------------------------------------------------

def test_status_lists_hooks_and_variables(pins: str) -> None:
    st = L.status(pins)
    assert st["loaded"] and st["mode"] == "full"
    assert abs(st["since_ns"] - time.time_ns()) < 3600e9
    assert st["hooks"][L.HOOK_NAMES[L.HOOK_ITER]] and st["hooks"][L.HOOK_NAMES[L.HOOK_SOCKOPS]]
    assert len(st["available"]) >= 100           # the coverage target
    assert {"SndLimTransStartup", "EarlyRetrans", "RackTimeout"} <= set(st["unavailable"])
    assert {"iter", "sockops", "closed", "ctl"} <= set(st["pins"])
    # full mode: sock_ops on every sent segment too
    assert st["hooks"][L.HOOK_NAMES[L.HOOK_SENT]]
    assert {"DupAcksOut", "ZeroRwinSent", "ECESent", "SndLimTransRwin"} <= set(st["available"])


def test_load_is_the_default_hook_set_unless_full(tmp_path: Any) -> None:
    """The per-segment hooks are opt-in (``--full``): a plain load keeps the data path
    within the default set's cost and says which variables that leaves out, and why."""
    from web10g.cli.ebpf import _parser

    assert _parser("ebpf").parse_args(["load"]).full is False
    assert _parser("ebpf").parse_args(["load", "--full"]).full is True
    pin = f"/sys/fs/bpf/web10g_test_d{os.getpid()}"
    L.load(pin)
    try:
        st = L.status(pin)
        assert st["mode"] == "default" and not st["hooks"][L.HOOK_NAMES[L.HOOK_SENT]]
        assert not st["hooks"][L.HOOK_NAMES[L.HOOK_PROBE]]
        assert "sent" in st["unavailable"]["DupAcksOut"]
        assert "probe" in st["unavailable"]["DupAcksIn"]
        assert {"CurCwnd", "Timeouts", "FastRetran"} <= set(st["available"])
    finally:
        L.unload(pin)


def test_loading_twice_is_harmless(pins: str) -> None:
    before = sorted(os.listdir(pins))
    res = L.load(pins, full=True)
    assert res.already and sorted(os.listdir(pins)) == before


def test_unload_leaves_nothing(tmp_path: Any) -> None:
    pin = f"/sys/fs/bpf/web10g_test_u{os.getpid()}"
    L.load(pin, full=False)
    assert L.status(pin)["mode"] == "default"
    assert L.unload(pin)
    assert not os.path.exists(pin) and L.unload(pin) == []
    assert L.status(pin) == {"loaded": False, "pin_dir": pin}
    with pytest.raises(L.NotLoaded, match="web10g ebpf load"):
        _agent(pin)


def test_cli_status(pins: str, capsys: Any) -> None:
    from web10g.cli import main

    assert main(["ebpf", "status", "--pin-dir", pins]) == 0
    out = capsys.readouterr().out
    assert "iter/tcp reader" in out and "variables: " in out


def test_getmib_shows_class_and_hook(capsys: Any) -> None:
    from web10g.cli.ebpf import format_getmib

    text = format_getmib()
    assert "\tFastRetran\t(2)\texact\tcong" in text
    assert "\tRackTimeout\t(2)\tunavailable" in text


def test_registry_covers_every_variable() -> None:
    for v in mib.variables(backend="estats"):
        assert v.ebpf is not None, v.name
        assert v.ebpf.match in mib.MATCH_CLASSES
        assert v.ebpf.available == bool(v.ebpf.hooks), v.name
    assert len(mib.variables(backend="ebpf")) >= 100


# -- reading -----------------------------------------------------------------------------------

def test_idle_flows_equal_sock_diag_where_both_exact(pins: str, keep: list[Any]) -> None:
    lst = socket.create_server(("127.0.0.1", 0))
    keep.append(lst)
    for _ in range(3):
        c, s = _pair(lst, keep)
        c.sendall(b"x" * 5000)
        s.recv(10000)
        s.sendall(b"y" * 100)
        c.recv(1000)
    port = lst.getsockname()[1]
    both = [v.name for v in mib.variables(backend="ebpf")
            if v.ebpf.match == "exact" and v.sock_diag.match == "exact"]
    assert len(both) >= 20
    flt = f"sport = :{port} or dport = :{port}"
    time.sleep(0.3)                      # idle: delayed ACKs are out
    with _agent(pins) as eb, web10g.open("sock_diag") as sd:
        for _attempt in range(3):
            a = eb.read_all(both, filter=flt)
            b = sd.read_all(both, filter=flt)
            a, b = a[np.argsort(a["cid"])], b[np.argsort(b["cid"])]
            assert len(a) == len(b) == 6
            assert np.array_equal(a["cid"], b["cid"])
            diff = [n for n in both + ["local_port", "rem_port", "local_addr", "uid", "inode"]
                    if not np.array_equal(a[n], b[n])]
            if not diff:
                break
            time.sleep(0.2)
        assert diff == []


def test_rows_say_what_is_reported(pins: str, keep: list[Any]) -> None:
    lst = socket.create_server(("127.0.0.1", 0))
    keep.append(lst)
    c, s = _pair(lst, keep)
    t_connect = time.time_ns() // 1000
    c.sendall(b"x" * 1000)
    s.recv(2000)
    port = lst.getsockname()[1]
    with _agent(pins) as eb:
        rows = eb.read_all(["ActiveOpen", "StartTimeStamp", "SegsOut", "SndUna", "RecInitial",
                            "SndInitial"], filter=f"sport = :{port} or dport = :{port}",
                           states="established,listen")   # not another test's TIME-WAIT
        assert len(rows) == 3
        client = rows[rows["rem_port"] == port][0]
        server = rows[(rows["local_port"] == port) & (rows["state"] == 5)][0]
        listener = rows[rows["state"] == 2][0]
        assert client["ActiveOpen"] == 1 and server["ActiveOpen"] == 2
        assert eb.available(rows, "ActiveOpen")[rows["state"] == 5].all()
        assert not eb.available(listener[None], "ActiveOpen").any()
        # the clock conversion is right to well within a second (a busy machine may take
        # a few ms between connect() and the first callback)
        assert abs(int(client["StartTimeStamp"]) - t_connect) < 1_000_000
        assert client["SndInitial"] == server["RecInitial"]
        assert client["RecInitial"] == server["SndInitial"]
        assert eb.available(rows, "SndUna")[rows["state"] == 5].all()


def test_whole_row_and_column_subsets_decode_alike(pins: str, keep: list[Any]) -> None:
    """The decoder builds every column in one C struct (csrc/w10g_ebpf.h) and copies the
    selected ones out: the struct is the dtype of every variable, and a subset of columns,
    in place or streamed (a large output), decodes to the same values as the whole row."""
    from web10g import _ebpf

    lst = socket.create_server(("127.0.0.1", 0))
    keep.append(lst)
    _pair(lst, keep)
    with _agent(pins) as eb:
        full = eb.dtype(None)
        offsets, size = _ebpf.row_layout()
        assert size == full.itemsize
        assert set(offsets) == set(_ebpf.FIELD_NAMES) == set(full.names)
        assert all(offsets[n] == full.fields[n][1] for n in full.names)
        names = ["SegsOut", "CurCwnd", "Priority", "SndUna", "MinRTT"]
        whole = _ebpf.Decoder(full, hz=eb.hz)
        sub = _ebpf.Decoder(eb.dtype(names), hz=eb.hz)
        assert whole.direct and whole.copy_runs == 0
        assert not sub.direct and sub.copy_runs >= 2
        fd = eb._open_iter()
        try:
            whole.read(fd, None, keep=True)
        finally:
            os.close(fd)
        raw = np.frombuffer(whole.last_bytes(), np.uint8)
        a, n = whole.decode(raw, now_ns=1)
        assert n >= 3
        for cap in (n, 16_000):                   # 16,000 x 520 B: streamed stores
            for dec in (whole, sub):
                b, m = dec.decode(raw, np.zeros(cap, dec.dtype), now_ns=1)
                assert m == n
                for col in ("cid", "state", *names):
                    assert (a[col][:n] == b[col][:n]).all(), (col, cap, dec.direct)


def _fields_vars(eb: Any) -> tuple[list[str], list[str]]:
    """(variables read from the tcp_sock alone, variables that need the storage's counters)"""
    from web10g.backends.ebpf import _STORAGE_HOOKS

    fv, cv = [], []
    for v in eb.variables():
        (cv if _STORAGE_HOOKS & set(v.ebpf.hooks) else fv).append(v.name)
    return fv, cv


def test_reads_without_counters_take_the_fields_reader(pins: str, keep: list[Any]) -> None:
    """A selection with no counter is read from the ``fields`` pin: the same records cut
    before the counters, without the storage lookup (docs/ebpf.md, "Read cost"). Its rows
    hold the same values as the full reader's for those columns, and never claim counters."""
    from web10g import _ebpf

    lst = socket.create_server(("127.0.0.1", 0))
    keep.append(lst)
    c, s = _pair(lst, keep)
    c.sendall(b"x" * 100_000)
    got = 0
    while got < 100_000:
        got += len(s.recv(65536))
    s.sendall(b"y" * 10)
    c.recv(10)
    port = lst.getsockname()[1]
    flt = f"sport = :{port} or dport = :{port}"
    fields, iters = os.path.join(pins, "fields"), os.path.join(pins, "iter")
    with _agent(pins) as eb:
        fv, cv = _fields_vars(eb)
        assert len(fv) >= 50 and "CurCwnd" in fv and "SmoothedRTT" in fv and "MinRTT" in cv
        assert eb.reader_pin(fv) == eb.reader_pin(["CurCwnd"]) == fields
        assert eb.reader_pin([]) == fields                  # list_conns: identity only
        assert eb.reader_pin(fv + ["MinRTT"]) == eb.reader_pin(None) == iters
        assert eb.hooks & L.HOOK_FIELDS and L.status(pins)["hooks"][L.HOOK_NAMES[L.HOOK_FIELDS]]
        # what the pin itself returns: a header announcing short records, then those
        fd = L.open_pin(fields)
        try:
            raw = b"".join(iter(lambda: os.read(fd, 1 << 16), b""))
        finally:
            os.close(fd)
        assert L.parse_header(raw)["rec_size"] == _ebpf.FIELDS_SIZE < _ebpf.REC_SIZE
        assert len(raw) > L.HDR.size and (len(raw) - L.HDR.size) % _ebpf.FIELDS_SIZE == 0
        short = np.sort(eb.read_all(fv, filter=flt), order="cid")
        whole = np.sort(eb.read_all(None, filter=flt), order="cid")
        assert len(short) == len(whole) == 2
        assert int(short["DataOctetsOut"].max()) >= 100_000
        # idle flows: every column but the read's own time and the record parts read
        for name in short.dtype.names:
            if name not in ("timestamp", "present"):
                assert (short[name] == whole[name]).all(), name
        for name in fv:
            assert (eb.available(short, name) == eb.available(whole, name)).all(), name
        assert eb.available(whole, "MinRTT").all()
        # the rows say no counters were read, and a counter asked of them is not "a 0"
        assert not (short["present"] & 2).any() and (whole["present"] & 2).all()
        assert len(eb.list_conns(filter=flt)) == 2


def test_fields_reader_missing_falls_back_to_the_full_one(keep: list[Any]) -> None:
    """Pins made by a loader without the fields reader (or whose fields program the kernel
    refused): every selection reads the full reader, with the same rows."""
    pin = f"/sys/fs/bpf/web10g_test_f{os.getpid()}"
    L.load(pin, full=False)
    try:
        lst = socket.create_server(("127.0.0.1", 0))
        keep.append(lst)
        _pair(lst, keep)
        flt = f"dport = :{lst.getsockname()[1]}"
        with _agent(pin) as eb:
            fv, _cv = _fields_vars(eb)
            assert eb.reader_pin(fv) == os.path.join(pin, "fields")
            before = eb.read_all(fv, filter=flt)
            os.unlink(os.path.join(pin, "fields"))       # an agent open across the change
            after = eb.read_all(fv, filter=flt)
            assert eb.reader_pin(fv) == os.path.join(pin, "iter")
            assert len(before) == len(after) == 1
            assert before["cid"][0] == after["cid"][0]
            assert before["SegsOut"][0] == after["SegsOut"][0]
        with _agent(pin) as eb:                           # and an agent opened after it
            assert not eb.hooks & L.HOOK_FIELDS
            assert eb.reader_pin(fv) == os.path.join(pin, "iter")
            assert len(eb.read_all(fv, filter=flt)) == 1
    finally:
        L.unload(pin)
    assert not os.path.exists(pin)


def test_older_flows_get_callbacks_but_no_from_start_counters(keep: list[Any]) -> None:
    lst = socket.create_server(("127.0.0.1", 0))
    keep.append(lst)
    c, s = _pair(lst, keep)              # opened before the programs
    pin = f"/sys/fs/bpf/web10g_test_o{os.getpid()}"
    L.load(pin, full=True)
    try:
        with _agent(pin) as eb:
            port = lst.getsockname()[1]
            rows = eb.read_all(["SegsOut", "CountRTT", "ActiveOpen"], filter=f"dport = :{port}")
            assert len(rows) == 1
            assert eb.available(rows, "SegsOut").all()
            assert not eb.available(rows, "CountRTT").any()   # counters start at load time
            assert not eb.available(rows, "ActiveOpen").any()
    finally:
        L.unload(pin)


def test_closed_delivers_final_records(pins: str, keep: list[Any]) -> None:
    lst = socket.create_server(("127.0.0.1", 0))
    keep.append(lst)
    port = lst.getsockname()[1]
    with _agent(pins) as eb:
        eb.watch_closed()
        c, s = _pair(lst, keep)
        c.sendall(b"x" * 30000)
        got = 0
        while got < 30000:
            got += len(s.recv(65536))
        before = eb.read_all(["SegsOut", "HCDataOctetsOut"], filter=f"dport = :{port}")
        c.close()
        s.close()
        time.sleep(0.2)
        rows = eb.closed(["SegsOut", "HCDataOctetsOut", "State"])
        mine = rows[rows["rem_port"] == port]
        assert len(mine) == 1 and mine["State"][0] == 1
        assert mine["cid"][0] == before["cid"][0]
        assert mine["HCDataOctetsOut"][0] == 30000
        assert mine["SegsOut"][0] >= before["SegsOut"][0]


def test_unprivileged_reader_gets_no_sequence_numbers(keep: list[Any]) -> None:
    pin = f"/sys/fs/bpf/web10g_test_g{os.getpid()}"
    L.load(pin, full=False, reader_group="nogroup")
    lst = socket.create_server(("127.0.0.1", 0))
    keep.append(lst)
    _pair(lst, keep)
    port = lst.getsockname()[1]
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:                          # the child: uid/gid nobody, no capabilities
        code = 1
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            with _agent(pin) as eb:
                rows = eb.read_all(["SndUna", "RecInitial", "SegsOut"],
                                   filter=f"dport = :{port}")
                # and through the fields reader (no counter selected): same rules
                assert eb.reader_pin(["SndUna", "SegsOut"]).endswith("/fields")
                fr = eb.read_all(["SndUna", "SegsOut"], filter=f"dport = :{port}")
                msg = (f"{len(rows)} {int(rows['SndUna'][0])} "
                       f"{int(eb.available(rows, 'SndUna')[0])} "
                       f"{int(eb.available(rows, 'SegsOut')[0])} {int(rows['SegsOut'][0])} "
                       f"{len(fr)} {int(fr['SndUna'][0])} {int(eb.available(fr, 'SndUna')[0])}")
                code = 0
        except BaseException as exc:  # noqa: BLE001 - reported through the pipe
            msg = f"error {exc!r}"
        os.write(w, msg.encode())
        os._exit(code)
    os.close(w)
    out = os.read(r, 4096).decode()
    os.close(r)
    os.waitpid(pid, 0)
    L.unload(pin)
    n, snd_una, seq_ok, segs_ok, segs, fn, f_una, f_ok = out.split()
    assert (n, snd_una, seq_ok, segs_ok) == ("1", "0", "0", "1") and int(segs) > 0
    assert (fn, f_una, f_ok) == ("1", "0", "0")


def test_recording_replays(pins: str, keep: list[Any], tmp_path: Any) -> None:
    from web10g.recording import Recorder

    lst = socket.create_server(("127.0.0.1", 0))
    keep.append(lst)
    _pair(lst, keep)
    port = lst.getsockname()[1]
    path = tmp_path / "eb.w10g"
    with _agent(pins) as eb:
        live = eb.read_all(["SegsOut", "ActiveOpen"], filter=f"dport = :{port}")
        with Recorder(path, eb) as rec:
            for _ in range(3):
                rec.sample(states="all")
    with web10g.open(replay=path) as rp:
        assert rp.backend == "ebpf"
        rows = rp.read_all(["SegsOut", "ActiveOpen"], filter=f"dport = :{port}")
        assert len(rows) == 1 and rows["cid"][0] == live["cid"][0]
        assert rows["ActiveOpen"][0] == 1 and rp.available(rows, "ActiveOpen").all()


# -- truth under loss, in a fresh network namespace ------------------------------------------

def _ns_pair(netns_name: str) -> tuple[socket.socket, int, socket.socket, socket.socket]:
    """A loopback connection inside the namespace: (listener, its port, client, server)."""
    with _netns.entered(netns_name):
        lst = socket.create_server(("127.0.0.1", 0))
        port = lst.getsockname()[1]
        c = socket.create_connection(("127.0.0.1", port))
        s, _ = lst.accept()
    return lst, port, c, s


def _nft(ns: str, *cmd: str) -> None:
    subprocess.run(["ip", "netns", "exec", ns, "nft", *cmd], check=True)


def _tcp_info(sock: socket.socket) -> dict[str, int]:
    b = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    return {"total_retrans": struct.unpack_from("<I", b, 100)[0],
            "snd_cwnd": struct.unpack_from("<I", b, 80)[0],
            "snd_mss": struct.unpack_from("<I", b, 16)[0],
            "srtt_us": struct.unpack_from("<I", b, 68)[0]}


def _unacked(sock: socket.socket) -> int:
    b = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    return int(struct.unpack_from("<I", b, 24)[0])      # tcpi_unacked


def _drain(s: socket.socket, stop: threading.Event) -> None:
    s.settimeout(0.2)
    while not stop.is_set():
        try:
            if not s.recv(1 << 20):
                return
        except TimeoutError:
            continue
        except OSError:
            return


def test_counters_under_induced_loss(pins: str, netns_name: str) -> None:
    keep: list[Any] = []
    lst, port, c, s = _ns_pair(netns_name)
    keep += [lst, c, s]
    # drop 1 in 8 data segments arriving at the server (on input: an output-hook drop
    # is a local send error to TCP, not a loss)
    _nft(netns_name, "add", "table", "inet", "w10g")
    _nft(netns_name, "add", "chain", "inet", "w10g", "out",
         "{ type filter hook input priority 0 ; }")
    rule = ["add", "rule", "inet", "w10g", "out", "tcp", "dport", str(port), "meta", "length",
            "gt", "200", "numgen", "random", "mod", "8", "==", "0", "drop"]
    _nft(netns_name, *rule)
    stop = threading.Event()
    t = threading.Thread(target=_drain, args=(s, stop), daemon=True)
    t.start()
    try:
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(200):
            c.sendall(b"z" * 16384)
        # a blackhole: every data segment dropped for a while -> retransmission timeouts
        _nft(netns_name, "flush", "chain", "inet", "w10g", "out")
        _nft(netns_name, "add", "rule", "inet", "w10g", "out", "tcp", "dport", str(port),
             "meta", "length", "gt", "200", "drop")
        c.sendall(b"q" * 4000)
        time.sleep(1.5)
        _nft(netns_name, "flush", "chain", "inet", "w10g", "out")
        for _ in range(20):
            c.sendall(b"z" * 16384)
        time.sleep(0.5)
        info = _tcp_info(c)
        names = ["SegsRetrans", "FastRetran", "Timeouts", "SubsequentTimeouts", "DupAcksIn",
                 "SACKsRcvd", "SACKBlocksRcvd", "MinRTT", "SampleRTT", "MaxRTT", "CountRTT",
                 "SumRTT", "SmoothedRTT", "CongSignals", "ActiveOpen", "LostRetransmitSegs"]
        with _agent(pins, netns=netns_name) as eb:
            rows = eb.read_all(names, filter=f"dport = :{port}")
            assert len(rows) == 1
            r = rows[0]
            assert eb.available(rows, "FastRetran").all()
            assert int(r["SegsRetrans"]) == info["total_retrans"] > 0
            # DupAcksIn follows RFC 5681, which wants the advertised window unchanged: the
            # drain thread's reads move the window between ACKs, so it may count none
            # here (test_dupacks_in_follow_rfc5681 makes them certain)
            assert r["FastRetran"] > 0 and r["SACKsRcvd"] > 0
            assert r["DupAcksIn"] <= r["SACKsRcvd"]       # each dup ACK here carries SACK
            assert r["SACKBlocksRcvd"] >= r["SACKsRcvd"]
            assert r["Timeouts"] >= 1
            assert r["CongSignals"] >= r["FastRetran"]
            assert r["MinRTT"] <= r["SampleRTT"] <= r["MaxRTT"]
            assert r["CountRTT"] > 0 and r["ActiveOpen"] == 1
            first = int(r["CountRTT"])
            for _ in range(50):          # RTT samples of varying size
                c.sendall(b"z" * 100000)
                time.sleep(0.002)
            time.sleep(0.3)
            again = eb.read_all(["CountRTT"], filter=f"dport = :{port}")
            assert int(again["CountRTT"][0]) > first
            srv = eb.read_all(["ActiveOpen"], filter=f"sport = :{port}")
            assert srv["ActiveOpen"].tolist() == [2]
    finally:
        stop.set()
        t.join(5)
        for k in keep:
            k.close()


def test_dupacks_in_follow_rfc5681(pins: str, netns_name: str) -> None:
    """Every 6th data segment dropped on its way in, the receiver not reading: each
    segment past a hole draws an ACK for the same point with the same window (the
    kernel never shrinks it; no read moves it), a duplicate ACK under RFC 5681."""
    lst, port, c, s = _ns_pair(netns_name)
    try:
        _nft(netns_name, "add", "table", "inet", "w10g")
        _nft(netns_name, "add", "chain", "inet", "w10g", "in",
             "{ type filter hook input priority 0 ; }")
        _nft(netns_name, "add", "rule", "inet", "w10g", "in", "tcp", "dport", str(port),
             "meta", "length", "gt", "200", "numgen", "inc", "mod", "6", "==", "0", "drop")
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(30):
            c.send(b"d" * 1000)
            time.sleep(0.002)            # one segment each, in order
        _nft(netns_name, "flush", "chain", "inet", "w10g", "in")
        time.sleep(0.6)                  # the holes are repaired (RTO at the latest)
        with _agent(pins, netns=netns_name) as eb:
            r = eb.read_all(["DupAcksIn", "SACKsRcvd", "SegsRetrans"],
                            filter=f"dport = :{port}")[0]
            # the receiver's side of it (full mode: sock_ops on every sent segment)
            rx = eb.read_all(["DupAcksOut", "DupAckEpisodes"], filter=f"sport = :{port}")
        assert r["SegsRetrans"] > 0
        assert 0 < r["DupAcksIn"] <= r["SACKsRcvd"]
        # every ACK sent while out-of-order data waited carried SACK blocks (no ACK was
        # dropped), and each hole began one run of them
        assert 0 < rx["DupAcksOut"][0] <= r["SACKsRcvd"]
        assert 1 <= rx["DupAckEpisodes"][0] <= rx["DupAcksOut"][0]
        got = 0
        s.settimeout(5)
        while got < 30_000:              # and every byte arrived
            got += len(s.recv(65536))
        assert got == 30_000
    finally:
        for k in (lst, c, s):
            k.close()


def test_zero_window_and_sender_limits(pins: str, netns_name: str) -> None:
    """A receiver that stops reading: its buffer fills, it advertises a zero window and
    answers the sender's window probes with more (ZeroRwinSent, sampled as each segment
    leaves); the sender moves from busy to receive-window-limited (SndLimTrans*, the
    kernel's tcp_chrono states sampled the same way), as tcp_info's chrono times say."""
    lst, port, c, s = _ns_pair(netns_name)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        c.setblocking(False)
        blocked, deadline = None, time.monotonic() + 10
        while time.monotonic() < deadline:    # until the send buffer stays full
            try:
                c.send(b"r" * 65536)
                blocked = None
            except BlockingIOError:
                blocked = blocked or time.monotonic()
                if time.monotonic() - blocked > 0.5:
                    break
                time.sleep(0.02)
        time.sleep(1.5)                       # a few window probes and their answers
        b = c.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
        busy_us, rwnd_us = struct.unpack_from("<QQ", b, 168)   # tcpi_busy_time, rwnd_limited
        with _agent(pins, netns=netns_name) as eb:
            tx = eb.read_all(["SndLimTransCwnd", "SndLimTransRwin", "SndLimTransSnd",
                              "SndLimTimeRwin", "ZeroRwinRcvd"], filter=f"dport = :{port}")
            rx = eb.read_all(["ZeroRwinSent", "CurRwinSent"], filter=f"sport = :{port}")
        assert len(tx) == len(rx) == 1
        assert rwnd_us > 0 and busy_us > 0
        assert tx["SndLimTransCwnd"][0] >= 1 and tx["SndLimTransRwin"][0] >= 1
        assert tx["SndLimTimeRwin"][0] > 0 and tx["ZeroRwinRcvd"][0] > 0
        assert rx["CurRwinSent"][0] == 0 and rx["ZeroRwinSent"][0] > 0
    finally:
        for k in (lst, c, s):
            k.close()


def test_ece_sent_when_data_arrives_marked(pins: str, netns_name: str) -> None:
    """ECN negotiated, every data segment marked CE on its way in (nftables): the receiver
    echoes ECE (ECESent) until the sender's CWR, CERcvd counts the marks, and the sender
    reduces its window (ECNsignals)."""
    subprocess.run(["ip", "netns", "exec", netns_name, "sysctl", "-qw",
                    "net.ipv4.tcp_ecn=1"], check=True)
    lst, port, c, s = _ns_pair(netns_name)
    stop = threading.Event()
    t = threading.Thread(target=_drain, args=(s, stop), daemon=True)
    t.start()
    try:
        with _agent(pins, netns=netns_name) as eb:
            quiet = eb.read_all(["ECESent"], filter=f"sport = :{port}")
            assert quiet["ECESent"][0] == 0 and eb.available(quiet, "ECESent").all()
            _nft(netns_name, "add", "table", "inet", "w10g")
            _nft(netns_name, "add", "chain", "inet", "w10g", "in",
                 "{ type filter hook input priority 0 ; }")
            _nft(netns_name, "add", "rule", "inet", "w10g", "in", "tcp", "dport", str(port),
                 "meta", "length", "gt", "200", "ip", "ecn", "set", "ce")
            for _ in range(50):
                c.sendall(b"e" * 16384)
                time.sleep(0.002)
            time.sleep(0.3)
            rx = eb.read_all(["ECESent", "CERcvd", "ECN"], filter=f"sport = :{port}")
            tx = eb.read_all(["ECNsignals", "ECN"], filter=f"dport = :{port}")
        assert rx["ECN"][0] == 1 and tx["ECN"][0] == 1        # negotiated
        assert rx["CERcvd"][0] > 0 and rx["ECESent"][0] > 0
        assert tx["ECNsignals"][0] >= 1
    finally:
        stop.set()
        t.join(5)
        for k in (lst, c, s):
            k.close()


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _forged_segment(sport: int, dport: int, seq: int, ack: int, payload: bytes = b"") -> bytes:
    """An IPv4 loopback TCP segment (ACK) of our own making, checksum right."""
    hdr = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF,
                      5 << 4, 0x10, 65535, 0, 0)
    pseudo = socket.inet_aton("127.0.0.1") * 2 + struct.pack("!BBH", 0, 6,
                                                             len(hdr) + len(payload))
    csum = _checksum(pseudo + hdr + payload)
    return hdr[:16] + struct.pack("!H", csum) + hdr[18:] + payload


def test_soft_errors_of_segments_outside_the_window(pins: str, netns_name: str) -> None:
    """Segments forged into an established flow, one beyond its receive window and one of
    data it already has: TCP drops both (and answers with an ACK), the kfree_skb hook
    charges them to the socket: SoftErrors counts them, SoftErrorReason says which
    (2 aboveDataWindow, then 1 belowDataWindow). The flow carries on."""
    subprocess.run(["ip", "netns", "exec", netns_name, "sysctl", "-qw",
                    "net.ipv4.tcp_timestamps=0"], check=True)   # no PAWS in the way
    lst, port, c, s = _ns_pair(netns_name)
    with _netns.entered(netns_name):
        raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
    try:
        c.sendall(b"a" * 5000)
        got = 0
        while got < 5000:
            got += len(s.recv(65536))
        cport = c.getsockname()[1]
        flt = f"sport = :{port} and dport = :{cport}"
        names = ["SoftErrors", "SoftErrorReason", "RcvNxt", "SndNxt"]
        with _agent(pins, netns=netns_name) as eb:
            before = eb.read_all(names, filter=flt)
            assert len(before) == 1 and before["SoftErrors"][0] == 0
            assert before["SoftErrorReason"][0] == 0 and eb.available(before, "SoftErrors").all()
            rcv_nxt, snd_nxt = int(before["RcvNxt"][0]), int(before["SndNxt"][0])
            raw.sendto(_forged_segment(cport, port, rcv_nxt + (1 << 30), snd_nxt, b"x" * 10),
                       ("127.0.0.1", 0))
            time.sleep(0.1)
            above = eb.read_all(names, filter=flt)
            raw.sendto(_forged_segment(cport, port, rcv_nxt - 1000, snd_nxt, b"y" * 10),
                       ("127.0.0.1", 0))
            time.sleep(0.1)
            below = eb.read_all(names, filter=flt)
        assert above["SoftErrors"][0] == 1 and above["SoftErrorReason"][0] == 2
        assert below["SoftErrors"][0] == 2 and below["SoftErrorReason"][0] == 1
        assert int(below["RcvNxt"][0]) == rcv_nxt           # neither was taken in
        c.sendall(b"b" * 100)
        s.settimeout(5)
        assert s.recv(100) == b"b" * 100
    finally:
        for k in (raw, lst, c, s):
            k.close()


def test_limcwnd_write_caps_a_bbr_flow_and_kill(pins: str, netns_name: str) -> None:
    with _netns.entered(netns_name):
        lst = socket.create_server(("127.0.0.1", 0))
        port = lst.getsockname()[1]
        c = socket.socket()
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, b"bbr")
        c.connect(("127.0.0.1", port))
        s, _ = lst.accept()
    stop = threading.Event()
    t = threading.Thread(target=_drain, args=(s, stop), daemon=True)
    t.start()
    try:
        with _agent(pins, netns=netns_name) as eb:
            cid = int(eb.list_conns(filter=f"dport = :{port}")["cid"][0])
            c.sendall(b"w" * 100000)
            mss = _tcp_info(c)["snd_mss"]
            # 2 segments: below bbr's own floor of 4 (bbr_cwnd_min_target), so an
            # unclamped bbr flow never shows it outside loss recovery.
            eb.write_var(cid, "LimCwnd", 2 * mss)
            row = eb.read_vars(cid, ["LimCwnd", "CurMSS"])
            assert row["LimCwnd"] == 2 * row["CurMSS"]
            seen = []
            for i in range(64):
                c.sendall(b"w" * 262144)
                if i >= 4:               # bbr applies the clamp at the next ACKs
                    seen.append(_tcp_info(c)["snd_cwnd"])
            # cwnd changes only when ACKs arrive: while the drain thread is not scheduled
            # (a loaded machine) the receive window closes, no new data is ACKed, and the
            # pre-clamp cwnd stays visible; after an RTO tcp_enter_loss() sets it to
            # packets_in_flight + 1 until the next ACK. So: most samples, and the value
            # once everything is ACKed.
            assert all(x > 0 for x in seen), seen
            assert sum(x <= 2 for x in seen) >= 0.5 * len(seen), seen
            deadline = time.monotonic() + 10
            while _unacked(c) and time.monotonic() < deadline:
                time.sleep(0.01)
            assert 0 < _tcp_info(c)["snd_cwnd"] <= 2
            with pytest.raises(errors.NotSupported):
                eb.write_var(cid, "LimMSS", 1000)
            with pytest.raises(errors.FlowNotFound):
                eb.write_var(2**62, "LimRwin", 10000)
            eb.kill(cid)
            with pytest.raises(OSError):
                for _ in range(10):
                    c.sendall(b"w" * 65536)
            assert not len(eb.list_conns(filter=f"dport = :{port}", states="established"))
    finally:
        stop.set()
        t.join(5)
        for k in (lst, c, s):
            k.close()
