"""Every tool on both backends: sock_diag against real loopback flows, estats against the
fake kernel (WEB10G_ESTATS_PEER). Output content is checked, not just exit codes."""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys

import pytest

import web10g
from web10g.cli import main as web10g_main


@pytest.fixture(params=["sock_diag", "estats"])
def env(request, monkeypatch, fake_kernel_factory):
    """A backend with one known flow: (backend, cid, expected(name) -> int or None, ports)."""
    if request.param == "estats":
        fk = fake_kernel_factory()
        cid = fk.add_flow(("10.0.0.1", 22), ("192.0.2.7", 51000))
        fk.add_flow(("2001:db8::1", 443), ("2001:db8::2", 40000))
        monkeypatch.setenv("WEB10G_ESTATS_PEER", str(fk.portid))
        yield {"backend": "estats", "cid": cid, "fk": fk, "local": ("10.0.0.1", 22),
               "remote": ("192.0.2.7", 51000)}
        return
    monkeypatch.delenv("WEB10G_ESTATS_PEER", raising=False)
    lst = socket.create_server(("127.0.0.1", 0))
    cli = socket.create_connection(lst.getsockname())
    srv, _ = lst.accept()
    cli.sendall(b"k" * 4000)
    srv.recv(10000)
    with web10g.open("sock_diag") as a:
        rows = a.list_conns(states="all")
    mine = ((rows["local_port"] == cli.getsockname()[1])
            & (rows["rem_port"] == lst.getsockname()[1]))
    cid = int(rows[mine]["cid"][0])
    yield {"backend": "sock_diag", "cid": cid, "fk": None,
           "local": ("127.0.0.1", cli.getsockname()[1]),
           "remote": ("127.0.0.1", lst.getsockname()[1])}
    for s in (cli, srv, lst):
        s.close()


def run(capsys, *argv):
    code = web10g_main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_listconns(capsys, env):
    code, out, _ = run(capsys, "listconns")
    assert code == 0
    lines = out.split("\n")
    assert lines[0] == "CID      LocalAddr            LocalPort RemAddr              RemPort "
    assert lines[1].startswith("-------- ----") and lines[2] == ""
    want = "%-8s %-20s %-8s %-20s %-8s" % (env["cid"], env["local"][0], env["local"][1],
                                           env["remote"][0], env["remote"][1])
    assert want in lines


def test_listconns_json_and_csv(capsys, env):
    code, out, _ = run(capsys, "listconns", "--json")
    recs = [json.loads(line) for line in out.splitlines()]
    me = next(r for r in recs if r["cid"] == env["cid"])
    assert me["local_addr"] == env["local"][0] and me["rem_port"] == env["remote"][1]
    code, out, _ = run(capsys, "listconns", "--csv")
    assert out.splitlines()[0] == "cid,family,state,local_addr,local_port,rem_addr,rem_port"


def test_listconninfo(capsys, env):
    code, out, _ = run(capsys, "listconninfo")
    assert code == 0
    assert out.startswith("CID      cmdline      PID      UID      LocalAddr")
    line = next(ln for ln in out.splitlines() if ln.startswith(f"{env['cid']} "))
    if env["backend"] == "sock_diag":
        with open("/proc/self/status") as fh:
            name = fh.readline().split(":", 1)[1].strip()
        assert f" {os.getpid()} " in line and name[:12] in line and f" {os.getuid()} " in line
    else:
        # the fake's connections exist in no socket table: no owner, blank columns
        assert re.match(rf"{env['cid']}\s+\s{{12}}\s+\s+10\.0\.0\.1", line)


def test_readvars_classic_text(capsys, env):
    code, out, _ = run(capsys, "readvars", str(env["cid"]))
    assert code == 0
    lines = out.split("\n")
    assert re.fullmatch(r"Timestamp sec: \d+, usec: \d+", lines[0])
    assert lines[1:5] == ["", "", "Perf Table", ""]
    values = dict(ln.split("=", 1) for ln in lines if "=" in ln)
    assert int(values["SegsOut"]) > 0
    if env["fk"]:
        assert int(values["SegsOut"]) == env["fk"].expected(env["cid"], "SegsOut")
        assert values["WinScaleRcvd"] == str(env["fk"].expected(env["cid"], "WinScaleRcvd"))
        assert "\n\nExtras Table\n\nPriority=" in out
    for heading in ("Path Table", "Stack Table", "App Table", "Tune Table"):
        assert f"\n\n{heading}\n\n" in out


def test_readvars_mask_and_names(capsys, env):
    code, out, _ = run(capsys, "readvars", str(env["cid"]), "-m", "0x1,0,0,0,0")
    names = [ln.split("=")[0] for ln in out.splitlines() if "=" in ln]
    assert names[0] == "SegsOut" and "DataSegsOut" not in names
    code, out, _ = run(capsys, "readvars", str(env["cid"]), "--vars", "SmoothedRTT,CurMSS",
                       "--json")
    rec = json.loads(out)
    assert rec["cid"] == env["cid"] and "CurMSS" in rec and "SegsOut" not in rec


def test_watchvars_classic_csv(capsys, env):
    code, out, _ = run(capsys, "watchvars", str(env["cid"]), "-s", "--count", "2", "-i", "20",
                       "--vars", "SegsOut,CurMSS")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "sec,usec,SegsOut\tCurMSS\t"
    assert len(lines) == 3 and all(re.fullmatch(r"\d+,\d+,\d+,\d+,", ln) for ln in lines[1:])


def test_watchvars_text_headings(capsys, env):
    code, out, _ = run(capsys, "watchvars", str(env["cid"]), "--count", "1")
    assert "\n\n Perf Table\n\n" in out and "Extras Table" not in out


def test_deltavars_differences_counters(capsys, env):
    if env["fk"]:
        env["fk"].auto_tick = True
    code, out, _ = run(capsys, "deltavars", str(env["cid"]), "--count", "2", "-i", "20",
                       "--vars", "SegsOut,CurMSS", "--csv")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "sec,usec,SegsOut,CurMSS,"
    first, second = (ln.split(",") for ln in lines[1:3])
    assert int(first[2]) > 0                                   # first: absolute
    assert first[3] == second[3] and int(second[3]) > 0        # a gauge: the value
    if env["fk"]:
        assert int(second[2]) == 10                            # the fake's step per tick
    code, out, _ = run(capsys, "deltavars", str(env["cid"]), "--count", "1",
                       "--vars", "SegsOut")
    assert re.search(r"^SegsOut {13}= \d+$", out, re.M)


def test_logger(capsys, env):
    code, out, _ = run(capsys, "logger", "--count", "2", "-i", "20", "-m", "0x3,0,0,0,0")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == ("Time, CID, SrcIp, SrcPort, DstIp, DstPort,SegsOut, DataSegsOut, "
                        "Priority")
    mine = [ln for ln in lines[1:] if ln.split(",")[1] == str(env["cid"])]
    assert len(mine) == 2
    t, cid, src, sport, dst, dport, segs, dsegs, prio = mine[0].split(",")
    assert re.fullmatch(r"\d+\.\d{6}", t) and (src, int(sport)) == env["local"]
    assert (dst, int(dport)) == env["remote"]


def test_logger_exclude_host(capsys, env):
    code, out, _ = run(capsys, "logger", "--count", "1", "-e", env["remote"][0])
    assert not [ln for ln in out.splitlines()[1:] if ln.split(",")[1] == str(env["cid"])]
    if env["fk"]:
        assert len(out.splitlines()) == 2              # the IPv6 flow is still there
    code, _, err = run(capsys, "logger", "--count", "1", "-e", "no-such-host.invalid")
    assert code == 1 and "getaddrinfo" in err


def test_record_write_and_read(capsys, env, tmp_path):
    path = tmp_path / "rec"
    code, out, _ = run(capsys, "recordwrite", str(env["cid"]), str(path))
    assert code == 0
    assert re.match(r"Timestamp sec: \d+, usec: \d+\nAddress: ", out)
    assert f"Address: {env['local'][0]} {env['local'][1]} {env['remote'][0]} " in out
    code, back, _ = run(capsys, "recordread", str(path))
    assert code == 0
    segs = re.search(r"^SegsOut:  (\d+)$", out, re.M).group(1)
    assert re.search(rf"^SegsOut:  {segs}$", back, re.M)
    code, js, _ = run(capsys, "recordread", str(path), "--json")
    assert json.loads(js)["cid"] == env["cid"]


def test_writevar(capsys, env):
    if env["backend"] == "estats":
        code, out, err = run(capsys, "writevar", str(env["cid"]), "LimCwnd", "20000")
        assert code == 0 and out == "" and env["fk"].written == [(env["cid"], "LimCwnd", 20000)]
    else:
        code, out, err = run(capsys, "writevar", str(env["cid"]),
                             "max_pacing_rate_bytes_per_s", "1250000")
        assert code == 0 and out == ""
        with web10g.open("sock_diag") as a:
            rec = a.read_vars(env["cid"], ["max_pacing_rate_bytes_per_s"])
        assert rec["max_pacing_rate_bytes_per_s"] == 1250000
        code, _, err = run(capsys, "writevar", str(env["cid"]), "LimCwnd", "20000")
        assert code == 1 and "BPF" in err                   # says what would work
    code, _, err = run(capsys, "writevar", str(env["cid"]), "SegsOut", "1")
    assert code == 1 and "read-only" in err
    code, _, err = run(capsys, "writevar", str(env["cid"]), "LimRwin", "lots")
    assert code == 1 and "whole number" in err


def test_recording_replays_through_every_tool(capsys, env, tmp_path):
    rec = tmp_path / "x.w10g"
    code, _, _ = run(capsys, "logger", "--count", "3", "-i", "20", "--record", str(rec),
                     "-o", os.devnull)
    assert code == 0
    code, out, _ = run(capsys, "logger", "--replay", str(rec), "-m", "0x1,0,0,0,0")
    assert code == 0
    mine = [ln for ln in out.splitlines()[1:] if ln.split(",")[1] == str(env["cid"])]
    assert len(mine) == 3
    code, out, _ = run(capsys, "readvars", str(env["cid"]), "--replay", str(rec))
    assert code == 0 and "SegsOut=" in out
    code, out, _ = run(capsys, "listconns", "--replay", str(rec))
    assert str(env["cid"]) in out
    csv_path = tmp_path / "x.csv"
    code, _, err = run(capsys, "convert", str(rec), str(csv_path), "--vars", "SegsOut")
    assert code == 0 and "rows" in err
    lines = csv_path.read_text().splitlines()
    assert lines[0].endswith(",SegsOut") and len([ln for ln in lines if
                                                   ln.startswith(f"{env['cid']},")]) == 3


@pytest.mark.parametrize("argv, message", [
    (["readvars"], "required: CID"),
    (["readvars", "0"], "positive"),
    (["readvars", "abc"], "invalid connection id"),
    (["readvars", "987654"], "987654"),
    (["readvars", "1", "--vars", "SmothedRTT"], "did you mean: SmoothedRTT"),
    (["watchvars", "987654", "--count", "1"], "987654"),
    (["watchvars", "1", "-i", "0"], "positive"),
    (["deltavars", "1", "--count", "0"], "at least 1"),
    (["writevar", "1", "LimCwnd"], "required"),
    (["writevar", "987654", "LimRwin", "100"], "987654"),
    (["recordread", "/nonexistent/rec"], "No such file"),
    (["recordwrite", "987654", "/tmp/never-written"], "987654"),
    (["logger", "--count", "1", "--vars", "SegsOut", "-m", "1"], "not both"),
    (["listconns", "--backend", "bogus"], "invalid choice"),
    (["listconns", "--filter", "dport = :x"], "invalid filter"),
    (["convert", "a", "b.txt"], ".csv or .parquet"),
])
def test_bad_input_is_a_clear_error(capsys, env, argv, message):
    try:
        code, _, err = run(capsys, *argv)
    except SystemExit as exc:                       # argparse usage errors
        code, (_, err) = exc.code, capsys.readouterr()
    assert code == 1
    assert message in err
    assert not os.path.exists("/tmp/never-written")


def test_classic_console_scripts_are_declared():
    text = open(os.path.join(os.path.dirname(__file__), "..", "pyproject.toml")).read()
    for tool in ("listconns", "listconninfo", "readvars", "watchvars", "deltavars", "logger",
                 "getmib", "writevar", "recordwrite", "recordread"):
        assert f'web10g-{tool} = "web10g.cli.{tool}:main"' in text


def test_subcommand_in_a_subprocess(env):
    res = subprocess.run([sys.executable, "-m", "web10g", "listconns", "--json"],
                         capture_output=True, text=True, check=False, env=os.environ.copy())
    assert res.returncode == 0
    assert env["cid"] in [json.loads(ln)["cid"] for ln in res.stdout.splitlines()]


def test_listconninfo_finds_owners_of_estats_rows_by_tuple(tcp_pair):
    """estats rows carry no uid/inode: they are matched to the kernel's socket table by
    4-tuple (here: real sockets, their uid/inode blanked as an estats row has them)."""
    from web10g.cli.listconninfo import owners

    lst, cli, _ = tcp_pair
    with web10g.open("sock_diag") as a:
        rows = a.list_conns(states="all")
    mine = ((rows["local_port"] == cli.getsockname()[1])
            & (rows["rem_port"] == lst.getsockname()[1]))
    rows = rows[mine].copy()
    rows["uid"], rows["inode"] = 0, 0

    from web10g.backends.estats import EstatsAgent

    # the estats agent's matching, without a Web10G kernel to open it on
    EstatsLike = lambda: EstatsAgent.__new__(EstatsAgent)  # noqa: E731
    uid, pid, _ = owners(EstatsLike(), rows)
    assert uid.tolist() == [os.getuid()] and pid.tolist() == [os.getpid()]
    stranger = rows.copy()
    stranger["rem_port"] += 1                   # a tuple no socket has
    uid, pid, cmd = owners(EstatsLike(), stranger)
    assert uid.tolist() == [-1] and pid.tolist() == [-1] and cmd.tolist() == [""]
