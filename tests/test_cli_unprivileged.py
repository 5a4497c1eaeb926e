"""The tools run by an unprivileged user (the suite runs as root: setpriv drops to nobody):
values the kernel does not report to them print as null / empty fields, not 0; notes
about what is hidden come once, plainly, as ``prog: note: ...`` on stderr."""
from __future__ import annotations

import csv
import io
import json
import os
import pathlib
import shutil
import subprocess
import sys
import warnings

import pytest

import web10g
from web10g.cli import _common

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]

needs_root = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                                reason="dropping to another user needs root and setpriv")


def cli(*argv: str, caps: str = "", user: bool = True) -> subprocess.CompletedProcess:
    """``python -m web10g ARGV`` as nobody (with ``caps`` as ambient capabilities)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("WEB10G_ESTATS_PEER", None)
    prefix = NOBODY + ([f"--inh-caps={caps}", f"--ambient-caps={caps}"] if caps else [])
    return subprocess.run((prefix if user else []) + [sys.executable, "-m", "web10g", *argv],
                          capture_output=True, text=True, env=env, cwd="/", timeout=60)


@pytest.fixture
def flow(tcp_pair):
    """This test's connection (root's): its client side's CID and an ss filter for it."""
    lst, cli_sock, _ = tcp_pair
    port = lst.getsockname()[1]
    flt = f"sport = :{cli_sock.getsockname()[1]} and dport = :{port}"
    with web10g.open("sock_diag") as a:
        rows = a.list_conns(filter=flt)
    assert len(rows) == 1
    return {"cid": int(rows["cid"][0]), "filter": flt,
            "both": f"sport = :{port} or dport = :{port}"}


def notes_only(stderr: str, prog: str) -> list[str]:
    """stderr's lines, each required to be a plain note of ``prog``."""
    lines = stderr.splitlines()
    for line in lines:
        assert line.startswith(f"web10g {prog}: note: "), stderr
    assert "Warning" not in stderr and ".py:" not in stderr     # no warning, no source line
    return lines


@needs_root
def test_unreported_values_are_null_in_json_and_empty_in_csv(flow):
    # INET_DIAG_CLASS_ID (Priority) and INET_DIAG_MARK (mark) go to CAP_NET_ADMIN only
    names = "SegsOut,Priority,mark"
    res = cli("readvars", str(flow["cid"]), "--json", "--vars", names)
    assert res.returncode == 0, res.stderr
    rec = json.loads(res.stdout)
    assert rec["Priority"] is None and rec["mark"] is None and rec["SegsOut"] > 0
    assert len(notes_only(res.stderr, "readvars")) == 2      # one note per missing part
    res = cli("readvars", str(flow["cid"]), "--csv", "--vars", names)
    row = list(csv.DictReader(io.StringIO(res.stdout)))[0]
    assert (row["Priority"], row["mark"]) == ("", "") and int(row["SegsOut"]) > 0
    res = cli("readvars", str(flow["cid"]), "--vars", names)
    assert "SegsOut=" in res.stdout and "Priority=" not in res.stdout
    assert "mark=" not in res.stdout
    res = cli("watchvars", str(flow["cid"]), "-s", "--count", "1", "--vars", names)
    assert res.stdout.splitlines()[1].endswith(",,,")           # SegsOut, '', ''
    res = cli("logger", "--count", "1", "--csv", "--vars", names, "--filter", flow["filter"])
    row = list(csv.DictReader(io.StringIO(res.stdout)))
    assert len(row) == 1 and (row[0]["Priority"], row[0]["mark"]) == ("", "")
    res = cli("logger", "--count", "1", "--json", "--vars", names, "--filter", flow["filter"])
    assert json.loads(res.stdout)["mark"] is None
    # root is sent them: the same reads give numbers
    res = cli("readvars", str(flow["cid"]), "--json", "--vars", names, user=False)
    rec = json.loads(res.stdout)
    assert isinstance(rec["Priority"], int) and isinstance(rec["mark"], int)
    assert res.stderr == ""


@needs_root
def test_listconninfo_says_once_that_other_users_owners_are_hidden(flow):
    res = cli("listconninfo", "--filter", flow["both"])
    assert res.returncode == 0, res.stderr
    line = next(ln for ln in res.stdout.splitlines() if ln.startswith(f"{flow['cid']} "))
    assert str(os.getpid()) not in line.split()                  # root's pid: hidden
    (note,) = notes_only(res.stderr, "listconninfo")
    assert "other users'" in note and "CAP_SYS_PTRACE" in note
    assert "CAP_DAC_READ_SEARCH" in note
    res = cli("listconninfo", "--filter", flow["both"], "--json")
    assert len(notes_only(res.stderr, "listconninfo")) == 1
    # with both capabilities the owners are there, and there is nothing to say
    res = cli("listconninfo", "--filter", flow["both"], caps="+sys_ptrace,+dac_read_search")
    line = next(ln for ln in res.stdout.splitlines() if ln.startswith(f"{flow['cid']} "))
    assert str(os.getpid()) in line.split() and res.stderr == ""
    # root: no note either
    res = cli("listconninfo", "--filter", flow["both"], user=False)
    assert res.returncode == 0 and res.stderr == ""


@needs_root
def test_package_warnings_are_plain_notes(flow):
    res = cli("logger", "--count", "1", "--json", "--filter", flow["filter"])
    assert res.returncode == 0
    notes = notes_only(res.stderr, "logger")
    assert any("CAP_NET_ADMIN" in n for n in notes)


def test_run_tool_routes_warnings_to_one_handler(capsys):
    def body():
        warnings.warn("the kernel dropped something", RuntimeWarning, stacklevel=2)
        warnings.warn("an old spelling", UserWarning, stacklevel=2)
        print("output")
        return 0

    assert _common.run_tool("web10g demo", body) == 0
    out, err = capsys.readouterr()
    assert out == "output\n"
    assert err == ("web10g demo: note: the kernel dropped something\n"
                   "web10g demo: note: an old spelling\n")
    # outside a tool, warnings are Python's again
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        warnings.warn("plain", RuntimeWarning, stacklevel=1)
    assert len(seen) == 1
