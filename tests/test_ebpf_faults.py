"""The ebpf backend under faults: each gives a clear error or a documented result (see
docs/ebpf.md, "Faults"), never a crash, a hang or a leaked pin.

* programs unloaded while a reader is open (mid-read, between reads, ring consumer);
* a reader in another network namespace (the iterator walks the reader's namespace),
  and one started with ``ip netns exec`` (no BPF filesystem there);
* ten thousand flows opening and closing during reads;
* a full ring buffer (close records lost: counted and reported, never waited for);
* two loaders racing (one loads, the other finds it loaded; no leaked pin), and the
  leftovers of a loader killed half-way.

Needs root, kernel BTF and the built BPF object; skips with the reason otherwise. Every
test uses its own pin directory under /sys/fs/bpf (so a real load is not disturbed) and
its own network namespaces; nothing asserts on speed.
"""
from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from netns_util import named_netns

from web10g import errors
from web10g import netns as _netns
from web10g.backends import ebpf_loader as L

REASON = L.unusable_reason()
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BPFFS = "/sys/fs/bpf"


def _agent(pin_dir: str, netns: Any = None) -> Any:
    from web10g.backends.ebpf import EbpfAgent

    return EbpfAgent(netns=netns, pin_dir=pin_dir)


def _our_pins() -> set[str]:
    return {n for n in os.listdir(BPFFS) if n.startswith(f"web10g_fault_{os.getpid()}_")}


@pytest.fixture
def pin_dir() -> Iterator[str]:
    """A fresh pin directory name (not loaded); anything left there is removed after the
    test, and a test that leaves a pin behind fails."""
    path = os.path.join(BPFFS, f"web10g_fault_{os.getpid()}_{uuid.uuid4().hex[:8]}")
    yield path
    leaked = os.path.exists(path)
    L.unload(path)
    assert not leaked, f"the test left pins in {path}"


@pytest.fixture
def loaded(pin_dir: str) -> Iterator[str]:
    res = L.load(pin_dir, full=True)
    assert not res.already
    yield pin_dir
    L.unload(pin_dir)


@pytest.fixture(scope="module", autouse=True)
def no_leaked_pins() -> Iterator[None]:
    yield
    left = _our_pins()
    for name in left:
        L.unload(os.path.join(BPFFS, name))
    assert not left, f"pins leaked: {sorted(left)}"


def _pair(lst: socket.socket) -> tuple[socket.socket, socket.socket]:
    c = socket.create_connection(lst.getsockname()[:2])
    s, _ = lst.accept()
    return c, s


# -- programs unloaded while a reader is open --------------------------------------------------

def test_unload_mid_read_finishes_the_read(loaded: str) -> None:
    """An open iterator holds its programs: a read started before the unload completes
    with every record, decoded as usual."""
    from web10g import _ebpf

    with _agent(loaded) as eb:
        dec = _ebpf.Decoder(eb.dtype(["SegsOut", "CountRTT"]), states=0xFFF)
        fd = os.open(os.path.join(loaded, "iter"), os.O_RDONLY)
        try:
            L.unload(loaded)
            assert not os.path.exists(loaded)
            arr, n = dec.read(fd)
        finally:
            os.close(fd)
        assert n > 0 and dec.hooks & L.HOOK_ITER


def test_unload_between_reads_is_a_clear_error_and_reload_resumes(loaded: str) -> None:
    lst = socket.create_server(("127.0.0.1", 0))
    c, s = _pair(lst)
    port = lst.getsockname()[1]
    try:
        with _agent(loaded) as eb:
            eb.watch_closed()
            rows = eb.read_all(["SegsOut"], filter=f"dport = :{port}")
            assert len(rows) == 1
            cid = int(rows["cid"][0])
            L.unload(loaded)
            with pytest.raises(L.NotLoaded, match="not loaded .*unloaded"):
                eb.read_all(["SegsOut"])
            with pytest.raises(L.NotLoaded):
                eb.write_var(cid, "LimRwin", 65536)
            # the ring consumer keeps its ring buffer, whose producer is detached now:
            # flows that close after the unload send nothing (unload detaches the hooks
            # before it returns)
            c2, s2 = _pair(lst)
            c2.close()
            s2.close()
            time.sleep(0.05)
            closed = eb.closed()
            assert port not in set(closed["rem_port"]) | set(closed["local_port"])
            # loaded again: the same agent reads the new instruments (no new agent needed)
            L.load(loaded, full=False)
            rows = eb.read_all(["SegsOut"], filter=f"dport = :{port}")
            assert len(rows) == 1 and eb.available(rows, "SegsOut").all()
    finally:
        for x in (c, s, lst):
            x.close()


# -- readers in other network namespaces -------------------------------------------------------

def test_reader_in_another_netns_sees_that_netns_only(loaded: str, netns_name: str) -> None:
    host_lst = socket.create_server(("127.0.0.1", 0))
    hc, hs = _pair(host_lst)
    with _netns.entered(netns_name):
        lst = socket.create_server(("127.0.0.1", 0))
        pairs = [_pair(lst) for _ in range(3)]
    port = lst.getsockname()[1]
    hport = host_lst.getsockname()[1]
    try:
        pairs[0][0].sendall(b"x" * 1000)
        pairs[0][1].recv(4096)
        with _agent(loaded, netns=netns_name) as eb:
            rows = eb.read_all(["SegsOut", "CountRTT", "ActiveOpen"], states="all")
            # only this namespace's sockets: the listener and the 3 pairs, none of the host's
            assert set(rows["local_port"]) | set(rows["rem_port"]) <= {0, port} | set(
                int(x.getsockname()[1]) for p in pairs for x in p)
            est = rows[rows["rem_port"] == port]
            assert len(est) == 3
            # opened after the load (sock_ops on the cgroup root covers every netns)
            assert eb.available(est, "CountRTT").all()
            assert (est["ActiveOpen"] == 1).all()
            assert hport not in set(rows["local_port"]) | set(rows["rem_port"])
        with _agent(loaded) as host:
            rows = host.read_all(["SegsOut"], states="all")
            assert port not in set(rows["rem_port"])
            assert hport in set(rows["rem_port"])
    finally:
        for p in pairs:
            for x in p:
                x.close()
        for x in (lst, hc, hs, host_lst):
            x.close()


def test_empty_netns_reads_zero_rows_then_deleted_is_a_clear_error(loaded: str) -> None:
    """A namespace without a single TCP socket still gets the iterator's header (written
    at the end of the walk): zero rows, not a "not web10g's iterator" error."""
    with named_netns() as name:
        eb = _agent(loaded, netns=name)
        assert len(eb.read_all(states="all")) == 0
        assert len(eb.list_conns()) == 0
    with eb:
        with pytest.raises(FileNotFoundError, match="network namespace"):
            eb.read_all()


def test_ip_netns_exec_reader_is_told_where_the_pins_are(loaded: str, netns_name: str) -> None:
    """``ip netns exec`` remounts /sys, so /sys/fs/bpf is empty there: the reader gets a
    NotLoaded that says so, and how to read that namespace instead."""
    code = ("import sys\nfrom web10g.backends.ebpf import EbpfAgent\n"
            "from web10g.backends import ebpf_loader as L\n"
            f"try:\n    EbpfAgent(pin_dir={loaded!r})\n"
            "except L.NotLoaded as e:\n    print(e)\n    sys.exit(3)\n")
    res = subprocess.run(["ip", "netns", "exec", netns_name, sys.executable, "-c", code],
                         capture_output=True, text=True, cwd=ROOT, timeout=60)
    if res.returncode == 0:
        pytest.skip("ip netns exec kept /sys/fs/bpf here (no remount)")
    assert res.returncode == 3, res.stderr
    assert "no BPF filesystem" in res.stdout and "netns=" in res.stdout


# -- churn: ten thousand flows opening and closing during reads ----------------------------------

CHURN = r"""
import socket, struct, sys
n = int(sys.argv[1])
lst = socket.create_server(("127.0.0.1", 0), backlog=512)
print(lst.getsockname()[1], flush=True)
sys.stdin.readline()
live = []
def connect():
    # loopback reuses TIME_WAIT ports (tcp_tw_reuse=2): a SYN that meets the old flow's
    # server side before its close completed is reset now and then, on a loaded machine;
    # a client tries again, and so does this load generator
    for attempt in range(5):
        try:
            return socket.create_connection(lst.getsockname())
        except ConnectionResetError:
            if attempt == 4:
                raise
for i in range(n):
    c = connect()
    s, _ = lst.accept()
    if i % 2:                         # half reset, half closed normally (TIME_WAIT)
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.send(b"x")
    s.recv(1)                         # (unread data would make close() send a reset)
    live.append((c, s))
    if len(live) > 200:               # up to 200 flows open at once, the oldest closing
        for x in live.pop(0):
            x.close()
for p in live:
    for x in p:
        x.close()
print("done", flush=True)
"""


def _churn(netns: str, n: int) -> subprocess.Popen[str]:
    return subprocess.Popen(["ip", "netns", "exec", netns, sys.executable, "-c", CHURN,
                             str(n)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)


def test_ten_thousand_flows_opening_and_closing_during_reads(loaded: str,
                                                             netns_name: str) -> None:
    """Every read succeeds and decodes while flows come and go under it; a flow that
    opens or closes during a read may be in it or not (the iterator walks the hash
    table bucket by bucket: it is not a snapshot)."""
    proc = _churn(netns_name, 10_000)
    assert proc.stdin and proc.stdout
    port = int(proc.stdout.readline())
    reads = 0
    seen_max = 0
    errors_seen: list[BaseException] = []
    try:
        with _agent(loaded, netns=netns_name) as eb:
            proc.stdin.write("go\n")
            proc.stdin.flush()
            deadline = time.monotonic() + 240
            while proc.poll() is None and time.monotonic() < deadline:
                try:
                    rows = eb.read_all(["SegsOut", "State", "CountRTT"], states="all")
                except Exception as exc:  # noqa: BLE001 - collected, asserted below
                    errors_seen.append(exc)
                    continue
                reads += 1
                mine = rows[(rows["local_port"] == port) | (rows["rem_port"] == port)]
                assert len(mine) == len(rows)            # this namespace only
                assert np.isin(rows["family"], (2, 10)).all()
                seen_max = max(seen_max, len(mine))
            assert proc.wait(timeout=max(1.0, deadline - time.monotonic())) == 0
            assert proc.stdout.readline().strip() == "done"
            rows = eb.read_all(["SegsOut"], states="all")    # the aftermath: TIME_WAIT
            assert (rows["state"] != 5).all()                # no ESTABLISHED left
            assert len(rows) > 0 and not eb.available(rows, "SegsOut").any()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not errors_seen, errors_seen[:3]
    assert reads >= 3 and seen_max > 1


# -- a full ring buffer ------------------------------------------------------------------------

def test_full_ring_buffer_loses_records_counts_and_warns(loaded: str,
                                                         netns_name: str) -> None:
    """Nobody consumes while 16,000 flow ends (8,000 flows) arrive: the 4 MiB ring holds
    about 8,300; the rest are counted, closed() returns what fitted and warns with the
    count, and the ring takes records again once drained. Never a hang."""
    with _agent(loaded, netns=netns_name) as eb:
        eb.watch_closed()
        proc = _churn(netns_name, 8_000)
        assert proc.stdin and proc.stdout
        int(proc.stdout.readline())
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert proc.wait(timeout=240) == 0
        time.sleep(0.2)
        t0 = time.monotonic()
        with pytest.warns(RuntimeWarning, match="close records were lost"):
            rows = eb.closed(["SegsOut"])
        assert time.monotonic() - t0 < 30
        ring_records = (1 << 22) // (_rec_size() + 8)
        assert 0 < len(rows) <= ring_records
        assert eb.closed_lost >= 16_000 - ring_records - 1
        st = L.status(loaded)
        assert st["closed_records_lost"] >= eb.closed_lost
        # drained: the next flow's end arrives, and no new loss is reported for it
        with _netns.entered(netns_name):
            lst = socket.create_server(("127.0.0.1", 0))
            c, s = _pair(lst)
        port = lst.getsockname()[1]
        c.close()
        s.close()
        lst.close()
        time.sleep(0.1)
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            rows = eb.closed(["SegsOut"])
        assert (rows["rem_port"] == port).sum() == 1


def _rec_size() -> int:
    from web10g import _ebpf

    return int(_ebpf.REC_SIZE)


# -- loaders racing ----------------------------------------------------------------------------

LOADER = r"""
import sys
from web10g.backends import ebpf_loader as L
sys.stdin.readline()
res = L.load(sys.argv[1], full=True)
print("already" if res.already else "loaded", flush=True)
"""


def _loaders(pin: str, n: int) -> list[str]:
    procs = [subprocess.Popen([sys.executable, "-c", LOADER, pin], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              cwd=ROOT) for _ in range(n)]
    for p in procs:                      # start them together
        assert p.stdin
        p.stdin.write("go\n")
        p.stdin.flush()
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        outs.append(out.strip())
    return outs


def test_two_loaders_racing_one_loads_the_other_finds_it(pin_dir: str) -> None:
    outs = _loaders(pin_dir, 2)
    assert sorted(outs) == ["already", "loaded"]
    st = L.status(pin_dir)
    assert st["loaded"] and st["mode"] == "full"
    assert {"iter", "sockops", "closed", "ctl", "drops"} <= set(st["pins"])
    with _agent(pin_dir) as eb:
        assert len(eb.read_all(["SegsOut"], states="all")) >= 0
    removed = L.unload(pin_dir)
    assert "iter" in removed and not os.path.exists(pin_dir)


def test_loader_racing_an_unload_is_harmless(pin_dir: str) -> None:
    L.load(pin_dir, full=False)
    errs: list[BaseException] = []

    def unload() -> None:
        try:
            L.unload(pin_dir)
        except BaseException as exc:  # noqa: BLE001 - asserted below
            errs.append(exc)

    t = threading.Thread(target=unload)
    t.start()
    res = L.load(pin_dir, full=False)
    t.join(timeout=60)
    assert not errs and not t.is_alive()
    # either order is fine, never half: loaded (the load came second: a fresh load, or
    # "already" if it took the lock first) or not at all (the unload came second)
    if os.path.exists(pin_dir):
        st = L.status(pin_dir)
        assert st["loaded"] and {"iter", "sockops", "closed"} <= set(st["pins"])
    else:
        assert res.already
    L.unload(pin_dir)


def test_leftovers_of_a_killed_loader_are_cleared(pin_dir: str) -> None:
    """A loader killed after making the pin directory but before pinning the reader
    leaves a set without ``iter``: the next load clears it instead of failing."""
    os.makedirs(pin_dir)
    assert not L.is_loaded(pin_dir)
    res = L.load(pin_dir, full=False)
    assert not res.already and L.is_loaded(pin_dir)
    L.unload(pin_dir)


# -- reads cut inside a record -------------------------------------------------------------------

def _feed(chunks: list[bytes]) -> int:
    """A pipe whose reads return ``chunks`` (a writer thread, one write per chunk)."""
    r, w = os.pipe()

    def write() -> None:
        for c in chunks:
            os.write(w, c)
            time.sleep(0.001)
        os.close(w)
    threading.Thread(target=write, daemon=True).start()
    return r


def test_reads_cut_inside_records_decode_the_same(loaded: str) -> None:
    """The streaming decoder keeps a record cut by a read's end for the next read (a
    BPF iterator returns whole records, a pipe or a future kernel need not); output
    that ends inside a record is a MalformedReply, not a crash."""
    from web10g import _ebpf

    raw = L._read_iter(os.path.join(loaded, "iter"))
    with _agent(loaded) as eb:
        dtype = eb.dtype()
    ref = _ebpf.Decoder(dtype, states=0xFFF)
    want, n = ref.decode(raw, now_ns=1)
    assert n > 0
    for step in (1000, 4093, 65536):
        dec = _ebpf.Decoder(dtype, states=0xFFF)
        fd = _feed([raw[i:i + step] for i in range(0, len(raw), step)])
        try:
            got, m = dec.read(fd)
        finally:
            os.close(fd)
        assert m == n
        same = [f for f in dtype.names if f not in ("timestamp", "StartTimeStamp")]
        assert (got[:m][same] == want[:n][same]).all()
    dec = _ebpf.Decoder(dtype, states=0xFFF)
    fd = _feed([raw[:len(raw) - 10]])
    try:
        with pytest.raises(errors.MalformedReply):
            dec.read(fd)
    finally:
        os.close(fd)


def test_fields_records_decode_and_forged_ones_are_refused(loaded: str) -> None:
    """The fields reader's records (cut before the counters, their size announced by the
    header) decode alike whole or cut anywhere; a record of the other size, a header
    announcing any other size, a short record claiming counters, or one cut short is a
    MalformedReply. The decoder never reads past a short record (fuzz/: ASan)."""
    from web10g import _ebpf

    raw = L._read_iter(os.path.join(loaded, "fields"))
    full = L._read_iter(os.path.join(loaded, "iter"))
    fs, hs = _ebpf.FIELDS_SIZE, L.HDR.size
    assert (len(raw) - hs) % fs == 0 and len(raw) > hs
    with _agent(loaded) as eb:
        dtype = eb.dtype(["SegsOut", "CurCwnd", "SndUna"])
    dec = _ebpf.Decoder(dtype, states=0xFFF)
    want, n = dec.decode(raw, now_ns=1)
    assert n == (len(raw) - hs) // fs
    assert not (want["present"][:n] & 2).any()
    for step in (1000, 4093):
        fd = _feed([raw[i:i + step] for i in range(0, len(raw), step)])
        try:
            got, m = _ebpf.Decoder(dtype, states=0xFFF).read(fd)
        finally:
            os.close(fd)
        assert m == n and (got[:m][["cid", "SegsOut", "CurCwnd"]] ==
                           want[:n][["cid", "SegsOut", "CurCwnd"]]).all()
    # the same decoder then reads whole records again (the size is per read)
    _got, m = dec.decode(full, now_ns=1)
    assert m == (len(full) - hs) // _ebpf.REC_SIZE

    def forged(data: bytes) -> None:
        with pytest.raises(errors.MalformedReply):
            _ebpf.Decoder(dtype, states=0xFFF).decode(data, now_ns=1)

    first = bytearray(raw[hs:hs + fs])
    first[6] |= 2                                    # W10G_EB_R_STORAGE in a short record
    forged(raw[:hs] + bytes(first))
    other = bytearray(raw[:hs])
    struct.pack_into("<H", other, 8, fs + 8)         # a header announcing a third size
    forged(bytes(other) + raw[hs:])
    forged(full[:hs] + raw[hs:])                     # short records after a whole header
    forged(raw[:hs] + full[hs:])                     # whole records after a short header
    forged(raw[hs:])                                 # short records with no header
    forged(raw[:-8])                                 # cut inside the last record


# -- pin directories another user planted (/sys/fs/bpf is world-writable, mode 1777) ----------

NOBODY = 65534


def test_a_symlink_planted_at_the_pin_dir_is_refused_and_nothing_is_removed(
        pin_dir: str, tmp_path) -> None:
    # another user links the pin directory's name to a directory of root's files: load
    # pinned "into" it, and its clean-up unlinked every file there
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "important").write_text("keep me")
    os.symlink(victim, pin_dir)
    os.lchown(pin_dir, NOBODY, NOBODY)
    try:
        for call in (lambda: L.load(pin_dir, full=False), lambda: L.unload(pin_dir)):
            with pytest.raises(L.UnsafePinDir, match="symbolic link") as info:
                call()
            assert isinstance(info.value, PermissionError)
        with pytest.raises((L.UnsafePinDir, L.NotLoaded)):
            _agent(pin_dir)
        assert (victim / "important").read_text() == "keep me"
    finally:
        os.unlink(pin_dir)


def test_a_pin_dir_another_user_made_is_refused(pin_dir: str) -> None:
    os.mkdir(pin_dir, 0o755)
    os.chown(pin_dir, NOBODY, NOBODY)        # as if nobody had made it first
    try:
        with pytest.raises(L.UnsafePinDir, match=f"belongs to uid {NOBODY}"):
            L.load(pin_dir, full=False)
        assert os.listdir(pin_dir) == []     # nothing pinned into it
        os.chown(pin_dir, 0, 0)
        os.chmod(pin_dir, 0o777)             # root's, but anyone may write in it
        with pytest.raises(L.UnsafePinDir, match="writable by every user"):
            L.load(pin_dir, full=False)
        with pytest.raises(L.UnsafePinDir):
            L.unload(pin_dir)
    finally:
        os.rmdir(pin_dir)


def test_unload_removes_only_web10g_pins(pin_dir: str) -> None:
    L.load(pin_dir, full=False)
    other = os.path.join(pin_dir, "not-ours")
    os.mkdir(other)                          # something else root put there
    with pytest.warns(RuntimeWarning, match="not-ours"):
        removed = L.unload(pin_dir)
    assert "iter" in removed and "not-ours" not in removed
    assert os.listdir(pin_dir) == ["not-ours"]
    os.rmdir(other)
    os.rmdir(pin_dir)


def test_a_reader_refuses_an_iterator_pin_root_did_not_make(pin_dir: str) -> None:
    os.mkdir(pin_dir, 0o755)
    try:
        os.symlink("/dev/zero", os.path.join(pin_dir, "iter"))
        with pytest.raises(L.UnsafePinDir, match="symbolic link"):
            _agent(pin_dir)
        os.unlink(os.path.join(pin_dir, "iter"))
        os.mkdir(os.path.join(pin_dir, "iter"))   # a directory named like the pin
        with pytest.raises(L.UnsafePinDir, match="not a pin the loader made"):
            _agent(pin_dir)
        os.rmdir(os.path.join(pin_dir, "iter"))
    finally:
        os.rmdir(pin_dir)


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                    reason="dropping to another user needs root and setpriv")
def test_a_loader_with_the_capabilities_but_not_root_owns_its_pins(pin_dir: str) -> None:
    # a service user given CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN (not root): its pin
    # directory is its own, and that is not "another user's"
    caps = "+bpf,+perfmon,+net_admin"
    code = ("import sys; from web10g.backends import ebpf_loader as L; "
            "from web10g.backends.ebpf import EbpfAgent; p = sys.argv[1]; "
            "L.load(p, full=False); a = EbpfAgent(pin_dir=p); "
            "print(len(a.read_all(states='all')) >= 0, a.header['reader_uid']); a.close(); "
            "print('iter' in L.unload(p))")
    res = subprocess.run(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
         f"--inh-caps={caps}", f"--ambient-caps={caps}", sys.executable, "-c", code,
         pin_dir], capture_output=True, text=True, timeout=120,
        env=dict(os.environ, PYTHONPATH=ROOT), cwd="/")
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["True", str(NOBODY), "True"], res.stdout
    assert not os.path.exists(pin_dir)
