"""The ebpf backend's privileged side: load, attach, pin, report, unload.

``load()`` opens web10g/bpf/web10g.bpf.o with libbpf (through ctypes: the system's
libbpf.so.1 at load time only; readers never need it), loads the programs the kernel
accepts, attaches sock_ops to the cgroup v2 root, the tracepoints, and the iterators,
and pins what readers and writers need under ``/sys/fs/bpf/web10g/`` (``pin_dir``).
A program type the kernel refuses does not fail the load: its hook is left out and the
variables that need it read as unavailable (``status()`` lists them).

Pins: ``iter`` (the reader: open + read, no capability needed, mode 0400 or 0440 to a
reader group), ``fields`` (the same reader without the storage's counters, for reads
that select none of them: same mode), ``write``/``kill`` (root), the maps ``ctl``
(write requests), ``closed`` (the ring buffer of close records) and ``drops``, and one
link per attached hook.
``unload()`` removes them all: the programs and maps go with the last reference.

Loading needs CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN (in practice: root) and a kernel
with BTF (CONFIG_DEBUG_INFO_BTF).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import grp
import gzip
import os
import stat
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from web10g import errors

DEFAULT_PIN_DIR = os.environ.get("WEB10G_EBPF_PIN_DIR", "/sys/fs/bpf/web10g")
OBJECT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      "bpf", "web10g.bpf.o")
BTF_PATH = "/sys/kernel/btf/vmlinux"

# csrc/w10g_ebpf_rec.h
HOOK_SOCKOPS, HOOK_ITER, HOOK_CONG, HOOK_RETRANS = 1, 2, 4, 8
HOOK_PROBE, HOOK_RING, HOOK_WRITE, HOOK_DESTROY = 16, 32, 64, 128
HOOK_FIELDS = 256
HOOK_SENT = 512     # not a program of its own: sock_ops' per-segment callback, full mode
HOOK_DROPS = 1024
HOOK_NAMES = {
    HOOK_SOCKOPS: "sock_ops (cgroup v2 root) + sk_storage",
    HOOK_ITER: "iter/tcp reader",
    HOOK_CONG: "tp_btf/tcp_cong_state_set",
    HOOK_RETRANS: "tp_btf/tcp_retransmit_skb",
    HOOK_PROBE: "tp_btf/tcp_probe (full mode: every received segment)",
    HOOK_RING: "ring buffer of close records",
    HOOK_WRITE: "iter/tcp writer (bpf_setsockopt)",
    HOOK_DESTROY: "iter/tcp bpf_sock_destroy",
    HOOK_FIELDS: "iter/tcp reader of the tcp_sock fields alone (reads without counters)",
    HOOK_SENT: "sock_ops HDR_OPT_LEN (full mode: every sent segment)",
    HOOK_DROPS: "tp_btf/kfree_skb (TCP input drops by reason)",
}
#: short hook names as the registry (ebpf-map.csv) spells them -> bits
HOOK_BY_NAME = {"sockops": HOOK_SOCKOPS, "iter": HOOK_ITER, "cong": HOOK_CONG,
                "retrans": HOOK_RETRANS, "probe": HOOK_PROBE, "ring": HOOK_RING,
                "drops": HOOK_DROPS,
                "write": HOOK_WRITE, "destroy": HOOK_DESTROY}

# (group, programs, hook bits, how it attaches, pin name)
GROUPS = [
    ("iter", ("w10g_iter",), HOOK_ITER, "iter", "iter"),
    ("fields", ("w10g_iter_fields",), HOOK_FIELDS, "iter", "fields"),
    ("sockops", ("w10g_sockops",), HOOK_SOCKOPS | HOOK_RING, "cgroup", "sockops"),
    ("cong", ("w10g_cong",), HOOK_CONG, "trace", "cong"),
    ("retrans", ("w10g_retrans",), HOOK_RETRANS, "trace", "retrans"),
    ("drops", ("w10g_drop",), HOOK_DROPS, "trace", "kfree_skb"),
    ("probe", ("w10g_probe",), HOOK_PROBE, "trace", "probe"),
    ("write", ("w10g_write",), HOOK_WRITE, "iter", "write"),
    ("destroy", ("w10g_kill",), HOOK_DESTROY, "iter", "kill"),
]
PINNED_MAPS = {"w10g_ctl": "ctl", "w10g_closed": "closed", "w10g_drops": "drops"}
#: the pins readers open (no capability; mode 0400, or 0440 to a reader group)
READER_PINS = ("iter", "fields")
#: every name the loader pins: all that unload() ever removes from a pin directory
OUR_PINS = frozenset(pin for *_, pin in GROUPS) | frozenset(PINNED_MAPS.values())

CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_PERFMON, CAP_BPF = 12, 21, 38, 39
HDR = struct.Struct("<IHHHHIIIQQQII")      # struct w10g_eb_hdr
HDR_MAGIC = 0x48423031


class EbpfError(errors.Web10GError):
    """The ebpf backend cannot be used here (not built, not loaded, no BTF, no rights)."""


class NotBuilt(EbpfError):
    pass


class NotLoaded(EbpfError):
    pass


class UnsafePinDir(EbpfError, PermissionError):
    """A pin directory (or pin) that another user made or can change: refused."""


# -- checks --------------------------------------------------------------------------

def not_built_reason() -> str | None:
    """Why the BPF object is missing, with what to install; None when it is built."""
    if os.path.exists(OBJECT):
        return None
    from web10g.bpf import build

    lack = build.missing()
    what = f" (missing: {', '.join(lack)})" if lack else ""
    return (f"the ebpf backend is not built: {os.path.relpath(OBJECT)} does not exist"
            f"{what}; {build.INSTALL_HINT}")


def _caps() -> int:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16)
    except OSError:
        pass
    return 0


def missing_capabilities() -> list[str]:
    caps = _caps()
    if caps >> CAP_SYS_ADMIN & 1:
        need = [(CAP_NET_ADMIN, "CAP_NET_ADMIN")]       # SYS_ADMIN covers BPF and PERFMON
    else:
        need = [(CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON"),
                (CAP_NET_ADMIN, "CAP_NET_ADMIN")]
    return [name for bit, name in need if not caps >> bit & 1]


def unusable_reason() -> str | None:
    """Why this process cannot load the programs here (not built, no BTF, no rights, no
    libbpf); None when it can. Tests skip with this."""
    try:
        _check_can_load()
        _libbpf()
    except (EbpfError, PermissionError) as exc:
        return str(exc)
    return None


def _check_can_load() -> None:
    reason = not_built_reason()
    if reason:
        raise NotBuilt(reason)
    if not os.path.exists(BTF_PATH):
        raise EbpfError("this kernel has no BTF (/sys/kernel/btf/vmlinux is missing): the "
                        "ebpf backend's iterator and tracepoints need a kernel built with "
                        "CONFIG_DEBUG_INFO_BTF=y")
    lack = missing_capabilities()
    if lack:
        raise PermissionError(errno.EPERM, "loading the ebpf programs needs CAP_BPF, "
                              "CAP_PERFMON and CAP_NET_ADMIN (run as root); this process "
                              f"lacks {', '.join(lack)}")


def _mounts() -> list[tuple[str, str, str]]:
    """(root, mount point, fs type) of this mount namespace."""
    out = []
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            left, _, right = line.partition(" - ")
            f = left.split()
            out.append((f[3], f[4].replace("\\040", " "), right.split()[0]))
    return out


def cgroup2_root() -> str:
    """The mount point of the cgroup v2 hierarchy's root (unified or hybrid layout)."""
    cands = [mp for root, mp, fs in _mounts() if fs == "cgroup2" and root == "/"]
    if not cands:
        raise EbpfError("no cgroup v2 hierarchy is mounted (sock_ops attaches to its root); "
                        "mount one: mount -t cgroup2 none /sys/fs/cgroup/unified")
    # prefer the conventional places
    for pref in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):
        if pref in cands:
            return pref
    return cands[0]


def _ensure_bpffs(pin_dir: str) -> None:
    parent = os.path.dirname(pin_dir.rstrip("/")) or "/"
    for _, mp, fs in _mounts():
        if fs == "bpf" and (parent == mp or parent.startswith(mp.rstrip("/") + "/")):
            return
    if parent == "/sys/fs/bpf":
        os.makedirs(parent, exist_ok=True)
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.mount(b"bpf", b"/sys/fs/bpf", b"bpf", 0, None) != 0:
            e = ctypes.get_errno()
            raise OSError(e, f"cannot mount the BPF filesystem on /sys/fs/bpf: {os.strerror(e)}")
        return
    raise EbpfError(f"{parent} is not on a BPF filesystem (mount -t bpf bpf {parent})")


def kernel_hz() -> int:
    """CONFIG_HZ, from the kernel's configuration (jiffies -> time)."""
    for path in ("/proc/config.gz", f"/boot/config-{os.uname().release}"):
        try:
            opener = gzip.open if path.endswith(".gz") else open
            with opener(path, "rt") as fh:  # type: ignore[operator]
                for line in fh:
                    if line.startswith("CONFIG_HZ="):
                        return int(line.split("=")[1])
        except OSError:
            continue
    # measure it: jiffies in /proc/timer_list over a known interval
    def jiffies() -> int:
        with open("/proc/timer_list") as fh:
            for line in fh:
                if line.startswith("jiffies:"):
                    return int(line.split()[1])
        raise OSError("no jiffies in /proc/timer_list")
    t0, j0 = time.monotonic(), jiffies()
    time.sleep(0.2)
    rate = (jiffies() - j0) / (time.monotonic() - t0)
    return min((100, 250, 300, 1000), key=lambda hz: abs(hz - rate))


# -- libbpf through ctypes -------------------------------------------------------------

class _Libbpf:
    def __init__(self) -> None:
        name = ctypes.util.find_library("bpf") or "libbpf.so.1"
        try:
            lib = ctypes.CDLL(name, use_errno=True)
        except OSError:
            raise EbpfError("loading needs libbpf (the loader uses the system's "
                            "libbpf.so.1): apt-get install libbpf1") from None
        vp, cp, ci = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int
        sig = {
            "bpf_object__open_file": (vp, [cp, vp]),
            "bpf_object__load": (ci, [vp]),
            "bpf_object__close": (None, [vp]),
            "bpf_object__next_program": (vp, [vp, vp]),
            "bpf_object__next_map": (vp, [vp, vp]),
            "bpf_object__find_program_by_name": (vp, [vp, cp]),
            "bpf_object__find_map_by_name": (vp, [vp, cp]),
            "bpf_program__name": (cp, [vp]),
            "bpf_program__set_autoload": (ci, [vp, ctypes.c_bool]),
            "bpf_program__attach": (vp, [vp]),
            "bpf_program__attach_cgroup": (vp, [vp, ci]),
            "bpf_program__attach_iter": (vp, [vp, vp]),
            "bpf_map__name": (cp, [vp]),
            "bpf_map__set_initial_value": (ci, [vp, vp, ctypes.c_size_t]),
            "bpf_map__pin": (ci, [vp, cp]),
            "bpf_link__pin": (ci, [vp, cp]),
            "bpf_link__destroy": (ci, [vp]),
            "libbpf_get_error": (ctypes.c_long, [vp]),
            "bpf_obj_get": (ci, [cp]),
            "bpf_link_detach": (ci, [ci]),
            "bpf_map_lookup_elem": (ci, [ci, vp, vp]),
            "libbpf_set_print": (vp, [vp]),
        }
        for fn, (res, args) in sig.items():
            f = getattr(lib, fn)
            f.restype, f.argtypes = res, args
        self.lib = lib
        self.log: list[str] = []
        libc = ctypes.CDLL(None)
        vsnprintf = libc.vsnprintf
        vsnprintf.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p]
        buf = ctypes.create_string_buffer(8192)

        def _print(level: int, fmt: bytes, args: int) -> int:
            vsnprintf(buf, len(buf), fmt, args)
            self.log.append(buf.value.decode(errors="replace"))
            return 0
        self._cb = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_char_p,
                                    ctypes.c_void_p)(_print)
        lib.libbpf_set_print(ctypes.cast(self._cb, ctypes.c_void_p))

    def ptr_err(self, p: int | None) -> int:
        return 0 if p else -(ctypes.get_errno() or errno.EINVAL)


_LIBBPF: _Libbpf | None = None


def _libbpf() -> _Libbpf:
    global _LIBBPF
    if _LIBBPF is None:
        _LIBBPF = _Libbpf()
    return _LIBBPF


@dataclass
class LoadResult:
    hooks: int = 0
    refused: dict[str, str] = field(default_factory=dict)   # group -> why
    pin_dir: str = DEFAULT_PIN_DIR
    already: bool = False


def _log_tail(lb: _Libbpf, n: int = 6) -> str:
    lines = [ln.strip() for chunk in lb.log for ln in chunk.splitlines() if ln.strip()]
    return " | ".join(lines[-n:])


def _open_and_load(lb: _Libbpf, groups: list[str], hooks: int, hz: int, full: bool,
                   now_ns: int) -> tuple[int | None, str]:
    """Open the object, keep only ``groups``' programs, set the configuration, load.
    (object pointer, "") or (None, why)."""
    lb.log.clear()
    obj = lb.lib.bpf_object__open_file(OBJECT.encode(), None)
    if not obj:
        return None, f"cannot open {OBJECT}: {os.strerror(-lb.ptr_err(obj))}"
    keep = {p for g, progs, *_ in GROUPS if g in groups for p in progs}
    prog = lb.lib.bpf_object__next_program(obj, None)
    while prog:
        name = lb.lib.bpf_program__name(prog).decode()
        lb.lib.bpf_program__set_autoload(prog, name in keep)
        prog = lb.lib.bpf_object__next_program(obj, prog)
    m = lb.lib.bpf_object__next_map(obj, None)
    while m:
        if lb.lib.bpf_map__name(m).decode().endswith(".rodata"):
            cfg = struct.pack("<IIIIQ", hooks, hz, int(full), 0, now_ns)
            lb.lib.bpf_map__set_initial_value(m, cfg, len(cfg))
        m = lb.lib.bpf_object__next_map(obj, m)
    rc = lb.lib.bpf_object__load(obj)
    if rc:
        why = f"{os.strerror(-rc) if rc < 0 else rc}: {_log_tail(lb)}"
        lb.lib.bpf_object__close(obj)
        return None, why
    return obj, ""


@contextmanager
def _locked(pin_dir: str) -> Iterator[None]:
    """One loader at a time (a second one racing waits for the first): a lock on the
    pin directory's parent on the BPF filesystem, which leaves no file behind."""
    fd = os.open(os.path.dirname(pin_dir.rstrip("/")) or "/", os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _trusted_uids() -> set[int]:
    """Who may own the pin directory and what is above it: root, and the loader itself
    (a service given CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN without being root)."""
    return {0, os.geteuid()}


def _unsafe_dir(st: os.stat_result) -> str | None:
    """Why another user could change a directory with this lstat, or None."""
    if not stat.S_ISDIR(st.st_mode):
        return "is not a directory"
    if st.st_uid not in _trusted_uids():
        return (f"belongs to uid {st.st_uid}, not root"
                + (f" or this loader (uid {os.geteuid()})" if os.geteuid() else ""))
    sticky = st.st_mode & stat.S_ISVTX
    if st.st_mode & 0o002 and not sticky:
        return "is writable by every user"
    if st.st_mode & 0o020 and st.st_gid != 0 and not sticky:
        return f"is writable by group {st.st_gid}"
    return None


def check_pin_dir(pin_dir: str) -> None:
    """Refuse a pin directory that another user made or can change.

    /sys/fs/bpf is world-writable on many systems (mode 1777): anyone may make a
    directory or a symbolic link there. Root loading into a name another user made
    would pin into a directory that user controls; worse, the clean-up that removes the
    pins would follow a link to wherever it points (root unlinking the files of /etc).
    So no component may be a symbolic link, every directory above must be root's and
    writable by root only (or sticky, like /sys/fs/bpf, whose entries only their owner
    may rename or remove), and the directory itself, when it exists, must be root's and
    writable by root only. Raises UnsafePinDir saying what to do."""
    pin_dir = os.path.abspath(pin_dir)
    real = os.path.realpath(pin_dir)
    if real != pin_dir:
        raise UnsafePinDir(f"{pin_dir} goes through a symbolic link (it resolves to {real}): "
                           "refused, since another user may have planted it; remove the "
                           "link (after checking who made it) or give --pin-dir a real "
                           "directory")
    parts = pin_dir.strip("/").split("/")
    for i in range(len(parts) + 1):
        d = "/" + "/".join(parts[:i])
        try:
            st = os.lstat(d)
        except FileNotFoundError:
            return                          # made by the loader, as root, 0700
        why = _unsafe_dir(st)
        if d == pin_dir and why is None and st.st_mode & 0o022:
            why = "is writable by users other than root"
        if why is not None:
            what = "the pin directory" if d == pin_dir else "a directory above the pins"
            raise UnsafePinDir(f"{d} ({what}) {why}: refused, since another user could "
                               "put or replace what root pins and removes there; remove "
                               "it after checking who made it (rm -r), or choose another "
                               "--pin-dir")


def open_pin(path: str) -> int:
    """Open a pin for reading: not through a symbolic link, and only if root or the
    owner of its directory (the loader) made it: a reader must not take another user's
    object for web10g's."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        raise UnsafePinDir(f"{path} is a symbolic link, not a pin the loader made: refused; "
                           "have root check and remove it, then 'web10g ebpf load'") from None
    st = os.fstat(fd)
    try:
        loader = os.lstat(os.path.dirname(path)).st_uid
    except OSError:
        loader = 0
    if st.st_uid not in (0, loader) or not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise UnsafePinDir(f"{path} is not a pin the loader made (owner uid {st.st_uid}, "
                           f"mode {stat.filemode(st.st_mode)}): refused; have root check "
                           "and remove it, then 'web10g ebpf load'")
    os.set_blocking(fd, True)
    return fd


def not_loaded_message(pin_dir: str) -> str:
    """Why ``pin_dir``/iter is missing, for the NotLoaded a reader raises: not loaded (or
    unloaded), or no BPF filesystem at all in this mount namespace (``ip netns exec``
    remounts /sys and hides /sys/fs/bpf)."""
    path = os.path.join(pin_dir, "iter")
    parent = os.path.dirname(os.path.abspath(pin_dir).rstrip("/")) or "/"
    try:
        on_bpffs = any(fs == "bpf" and (parent == mp or parent.startswith(mp.rstrip("/") + "/"))
                       for _, mp, fs in _mounts())
    except OSError:
        on_bpffs = True
    if not on_bpffs:
        return (f"{path} does not exist: no BPF filesystem is mounted at {parent} in this "
                "mount namespace ('ip netns exec' remounts /sys and hides /sys/fs/bpf): "
                "read another network namespace with web10g.open('ebpf', netns=NAME) / "
                "--netns NAME from the host's mount namespace, or mount -t bpf bpf "
                "/sys/fs/bpf")
    return (f"the ebpf programs are not loaded ({path} does not exist; they were "
            "unloaded?): run 'web10g ebpf load' as root")


def is_loaded(pin_dir: str = DEFAULT_PIN_DIR) -> bool:
    return os.path.exists(os.path.join(pin_dir, "iter"))


def load(pin_dir: str = DEFAULT_PIN_DIR, *, full: bool = False,
         reader_group: str | None = None, reload: bool = False) -> LoadResult:
    """Load and attach the instruments, pin them under ``pin_dir``.

    ``full`` adds the per-segment hooks, tcp_probe on every received segment and sock_ops
    HDR_OPT_LEN on every sent one (23 more variables, about 5% more data-path cost:
    docs/ebpf.md). Off by default: the default hook set keeps within 5%.
    ``reader_group`` lets that group read the pinned iterator (default: root only).
    Loading again while loaded is harmless: nothing changes (``already`` is True) unless
    ``reload``, which unloads first. A hook the kernel refuses is left out
    (``refused``); only a refused reader iterator fails the load.
    """
    _check_can_load()
    pin_dir = os.path.abspath(pin_dir)
    gid = None
    if reader_group is not None:
        try:
            gid = grp.getgrnam(reader_group).gr_gid
        except KeyError:
            raise ValueError(f"no such group: {reader_group!r}") from None
    _ensure_bpffs(pin_dir)
    check_pin_dir(pin_dir)
    with _locked(pin_dir):
        check_pin_dir(pin_dir)
        if os.path.isdir(pin_dir) and not is_loaded(pin_dir):
            # what a loader killed half-way left behind (the reader is pinned first, so
            # no reader means no complete set): clear it instead of failing on EEXIST
            _unload_locked(pin_dir)
        if is_loaded(pin_dir):
            if not reload:
                res = LoadResult(pin_dir=pin_dir, already=True)
                try:
                    res.hooks = read_header(pin_dir)["hooks"]
                except (OSError, EbpfError):
                    pass
                if gid is not None:
                    _set_modes(pin_dir, gid)
                return res
            _unload_locked(pin_dir)
        return _load_locked(pin_dir, full, gid)


def _load_locked(pin_dir: str, full: bool, gid: int | None) -> LoadResult:
    lb = _libbpf()
    hz = kernel_hz()
    now = time.time_ns()
    wanted = [g for g, *_ in GROUPS if full or g != "probe"]
    bits = {g: b for g, _, b, *_ in GROUPS}
    res = LoadResult(pin_dir=pin_dir)

    def hooks_of(groups: list[str], full: bool = full) -> int:
        h = 0
        for g in groups:
            h |= bits[g]
        if full and "sockops" in groups:
            h |= HOOK_SENT          # sock_ops then asks for HDR_OPT_LEN on every send
        return h

    obj, why = _open_and_load(lb, wanted, hooks_of(wanted), hz, full, now)
    accepted = list(wanted)
    if obj is None:
        # find which program types this kernel refuses: each group with the reader
        accepted = []
        for g in wanted:
            groups = [g] if g == "iter" else ["iter", g]
            o, w = _open_and_load(lb, groups, hooks_of(groups), hz, full, now)
            if o is None:
                res.refused[g] = w
            else:
                accepted.append(g)
                lb.lib.bpf_object__close(o)
        if "iter" not in accepted:
            raise EbpfError("the kernel refused the ebpf backend's TCP iterator program: "
                            + res.refused.get("iter", why))
        full = full and "probe" in accepted
        obj, why = _open_and_load(lb, accepted, hooks_of(accepted, full), hz, full, now)
        if obj is None:
            raise EbpfError(f"loading the accepted programs failed: {why}")
    try:
        os.makedirs(os.path.dirname(pin_dir), mode=0o755, exist_ok=True)
        try:
            os.mkdir(pin_dir, 0o700)
        except FileExistsError:
            pass
        # whoever won a race for the name (the parent may be world-writable), what is
        # there now must be root's, or nothing is pinned into it
        check_pin_dir(pin_dir)
        cg_fd = os.open(cgroup2_root(), os.O_RDONLY | os.O_DIRECTORY)
        try:
            for g, progs, hook, how, pin in GROUPS:
                if g not in accepted:
                    continue
                prog = lb.lib.bpf_object__find_program_by_name(obj, progs[0].encode())
                if how == "cgroup":
                    link = lb.lib.bpf_program__attach_cgroup(prog, cg_fd)
                elif how == "iter":
                    link = lb.lib.bpf_program__attach_iter(prog, None)
                else:
                    link = lb.lib.bpf_program__attach(prog)
                if not link:
                    res.refused[g] = (f"attach failed: {os.strerror(-lb.ptr_err(link))}: "
                                      f"{_log_tail(lb, 2)}")
                    if g == "iter":
                        raise EbpfError(f"cannot attach the TCP iterator: {res.refused[g]}")
                    continue
                rc = lb.lib.bpf_link__pin(link, os.path.join(pin_dir, pin).encode())
                lb.lib.bpf_link__destroy(link)   # the pin keeps it attached
                if rc:
                    raise OSError(-rc, f"cannot pin {pin} in {pin_dir}: {os.strerror(-rc)}")
                res.hooks |= hook
            if full and res.hooks & HOOK_SOCKOPS:
                res.hooks |= HOOK_SENT
        finally:
            os.close(cg_fd)
        for name, pin in PINNED_MAPS.items():
            m = lb.lib.bpf_object__find_map_by_name(obj, name.encode())
            if m:
                rc = lb.lib.bpf_map__pin(m, os.path.join(pin_dir, pin).encode())
                if rc:
                    raise OSError(-rc, f"cannot pin map {pin}: {os.strerror(-rc)}")
    except BaseException:
        lb.lib.bpf_object__close(obj)
        _unload_locked(pin_dir)
        raise
    lb.lib.bpf_object__close(obj)
    # (an attach that failed after loading leaves its pin out: status() and readers
    # take a hook as present only when its pin is there)
    _set_modes(pin_dir, gid)
    # switch callbacks on for flows older than the programs (this netns; other
    # namespaces get theirs at their first read)
    try:
        _read_iter(os.path.join(pin_dir, "iter"))
    except OSError:
        pass
    return res


def _set_modes(pin_dir: str, gid: int | None) -> None:
    os.chmod(pin_dir, 0o750 if gid is not None else 0o700)
    if gid is not None:
        os.chown(pin_dir, 0, gid)
    for name in READER_PINS:
        it = os.path.join(pin_dir, name)
        if os.path.exists(it):
            os.chmod(it, 0o440 if gid is not None else 0o400)
            if gid is not None:
                os.chown(it, 0, gid)


def _detach(path: str) -> None:
    """Detach a pinned link now (BPF_LINK_DETACH). Unpinning alone detaches it only when
    the kernel frees the pin's inode, after an RCU grace period and a work item: until
    then the hook keeps running (a flow closing right after unload() would still send a
    close record). Iterator links cannot be detached (and need not be: they run only when
    read; an open reader keeps its programs until it closes). Errors are ignored: the
    unlink that follows is what unload guarantees."""
    try:
        lb = _libbpf()
    except EbpfError:
        return
    fd = lb.lib.bpf_obj_get(path.encode())
    if fd < 0:
        return
    try:
        lb.lib.bpf_link_detach(fd)
    finally:
        os.close(fd)


_LINK_PINS = frozenset(pin for _g, _p, _b, how, pin in GROUPS if how != "iter")


def _unload_locked(pin_dir: str) -> list[str]:
    """Remove web10g's pins (OUR_PINS) from ``pin_dir``, and the directory when nothing
    else is in it; the caller has run check_pin_dir(). Anything else there is left as it
    is, with a warning: it is not ours to remove."""
    removed: list[str] = []
    try:
        dfd = os.open(pin_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return removed
    try:
        names = os.listdir(dfd)
        for name in sorted(n for n in names if n in OUR_PINS):
            if name in _LINK_PINS:
                _detach(os.path.join(pin_dir, name))
            os.unlink(name, dir_fd=dfd)
            removed.append(name)
        others = sorted(set(names) - OUR_PINS)
    finally:
        os.close(dfd)
    if others:
        import warnings

        warnings.warn(f"{pin_dir} also holds {', '.join(others)}, which web10g did not pin: "
                      "left in place (and the directory with them)", RuntimeWarning,
                      stacklevel=3)
    else:
        os.rmdir(pin_dir)
    return removed


def unload(pin_dir: str = DEFAULT_PIN_DIR) -> list[str]:
    """Remove every pin (programs detach, maps go with the last reference). Returns the
    removed pin names; [] when nothing was loaded."""
    pin_dir = os.path.abspath(pin_dir)
    if os.geteuid() != 0 and missing_capabilities():
        raise PermissionError(errno.EPERM, "unloading needs root (the pins are root's)")
    if not os.path.lexists(pin_dir):
        return []
    check_pin_dir(pin_dir)
    with _locked(pin_dir):
        check_pin_dir(pin_dir)
        return _unload_locked(pin_dir)


# -- reading the header / status ----------------------------------------------------------

def _read_iter(path: str, limit: int | None = None) -> bytes:
    fd = open_pin(path)
    try:
        chunks = []
        total = 0
        while True:
            b = os.read(fd, 1 << 16)
            if not b:
                break
            chunks.append(b)
            total += len(b)
            if limit is not None and total >= limit:
                break
        return b"".join(chunks)
    finally:
        os.close(fd)


def parse_header(raw: bytes) -> dict[str, Any]:
    if len(raw) < HDR.size:
        raise EbpfError("the ebpf iterator returned no header (a different program is "
                        "pinned there?)")
    (magic, size, version, rec_size, _, hooks, hz, full, load_ns, ktime, jiffies, uid,
     netns) = HDR.unpack_from(raw)
    if magic != HDR_MAGIC or size != HDR.size:
        raise EbpfError("the pinned iterator's output is not web10g's (bad header magic)")
    return {"version": version, "rec_size": rec_size, "hooks": hooks, "hz": hz,
            "full": bool(full), "load_realtime_ns": load_ns, "ktime_ns": ktime,
            "jiffies": jiffies, "reader_uid": uid, "netns_ino": netns}


def read_header(pin_dir: str = DEFAULT_PIN_DIR) -> dict[str, Any]:
    path = os.path.join(pin_dir, "iter")
    try:
        raw = _read_iter(path, limit=HDR.size)
    except FileNotFoundError:
        raise NotLoaded(not_loaded_message(pin_dir)) from None
    except PermissionError:
        raise PermissionError(errno.EACCES, f"{path} is readable by root only: run as root, "
                              "or have root load with 'web10g ebpf load --reader-group "
                              "GROUP' and join that group") from None
    return parse_header(raw)


def status(pin_dir: str = DEFAULT_PIN_DIR) -> dict[str, Any]:
    """What is loaded (hooks, mode, since when), what is pinned, which variables are
    available. ``{"loaded": False}`` when nothing is."""
    from web10g import mib

    pin_dir = os.path.abspath(pin_dir)
    if not is_loaded(pin_dir):
        out: dict[str, Any] = {"loaded": False, "pin_dir": pin_dir}
        reason = not_built_reason()
        if reason:
            out["not_built"] = reason
        return out
    hdr = read_header(pin_dir)
    pins = sorted(os.listdir(pin_dir)) if os.access(pin_dir, os.R_OK) else []
    hooks = hdr["hooks"]
    # a hook whose link pin is missing did not attach
    if pins:
        for _g, _, bit, _, pin in GROUPS:
            if hooks & bit and pin not in pins:
                hooks &= ~bit
    avail, unavail = mib.ebpf_availability(hooks)
    lost = closed_records_lost(pin_dir)
    return {
        "loaded": True, "pin_dir": pin_dir, "since_ns": hdr["load_realtime_ns"],
        "since": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(hdr["load_realtime_ns"] / 1e9)),
        "mode": "full" if hdr["full"] else "default", "hz": hdr["hz"],
        "hooks": {HOOK_NAMES[b]: bool(hooks & b) for b in HOOK_NAMES}, "hook_bits": hooks,
        "pins": pins, "available": avail, "unavailable": unavail,
        "closed_records_lost": lost,
    }


def closed_records_lost(pin_dir: str = DEFAULT_PIN_DIR) -> int | None:
    """Close records the ring buffer could not take since the load (it was full: no
    consumer, or one too slow), in every namespace; None when it cannot be read (not
    root, not loaded)."""
    path = os.path.join(pin_dir, "drops")
    if not os.path.exists(path) or missing_capabilities():
        return None
    try:
        lb = _libbpf()
    except EbpfError:
        return None
    fd = lb.lib.bpf_obj_get(path.encode())
    if fd < 0:
        return None
    try:
        key = ctypes.c_uint32(0)
        val = ctypes.c_uint64(0)
        if lb.lib.bpf_map_lookup_elem(fd, ctypes.byref(key), ctypes.byref(val)):
            return None
        return int(val.value)
    finally:
        os.close(fd)
