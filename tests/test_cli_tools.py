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
                       "--vars", "SegsOut,CurMSS", "-s")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "sec,usec,SegsOut,CurMSS,"          # classic: each name + comma
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


# -- replays, stock extras, CSV shapes, help texts, ss state names -------------------------

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def cli(*argv, timeout=60, **kw):
    """``python -m web10g ARGV`` in a subprocess (so a tool that never ends fails the test
    by its timeout instead of hanging the suite)."""
    env = dict(os.environ, PYTHONPATH=os.path.abspath(ROOT))
    env.pop("WEB10G_ESTATS_PEER", None)
    return subprocess.run([sys.executable, "-m", "web10g", *argv], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd="/", **kw)


def cid_of(local_port, rem_port):
    with web10g.open("sock_diag") as a:
        rows = a.list_conns(filter=f"sport = :{local_port} and dport = :{rem_port}",
                            states="all")
    assert len(rows) == 1
    return int(rows["cid"][0])


@pytest.fixture
def recording_with_a_late_flow(tmp_path, tcp_pair):
    """Five recorded samples of this test's flows: the pair's client side in all five,
    a second connection ("late") only in samples 3 and 4, with data sent before each."""
    import struct

    from web10g.recording import Recorder

    lst, cli_sock, srv = tcp_pair
    port = lst.getsockname()[1]
    flt = f"sport = :{port} or dport = :{port}"
    path = tmp_path / "late.w10g"
    with web10g.open("sock_diag") as agent:
        rec = Recorder(path, agent)
        try:
            rec.sample(filter=flt)
            rec.sample(filter=flt)
            late = socket.create_connection(lst.getsockname())
            late_srv, _ = lst.accept()
            late.sendall(b"a" * 1000)
            late_srv.recv(100000)
            late_cid = cid_of(late.getsockname()[1], port)
            rec.sample(filter=flt)
            late.sendall(b"b" * 3000)
            late_srv.recv(100000)
            rec.sample(filter=flt)
            # an RST: both ends leave the socket tables at once
            late.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            late.close()
            rec.sample(filter=flt)
            late_srv.close()
        finally:
            rec.close()
    return {"path": str(path), "late": late_cid,
            "steady": cid_of(cli_sock.getsockname()[1], port)}


def test_watchvars_replay_steps_through_the_recording_and_ends(recording_with_a_late_flow):
    r = recording_with_a_late_flow
    res = cli("watchvars", str(r["steady"]), "--replay", r["path"], "-s",
              "--vars", "SegsOut")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == "sec,usec,SegsOut\t"
    stamps = [tuple(map(int, ln.split(",")[:2])) for ln in lines[1:]]
    assert len(stamps) == 5                          # one row per recorded sample, then end
    assert stamps == sorted(set(stamps))             # each a different sample, in order
    assert res.stderr == ""


def test_replay_reports_samples_without_the_flow(recording_with_a_late_flow):
    r = recording_with_a_late_flow
    res = cli("watchvars", str(r["late"]), "--replay", r["path"], "--csv",
              "--vars", "DataOctetsOut")
    assert res.returncode == 0, res.stderr
    rows = [ln.split(",") for ln in res.stdout.splitlines()[1:]]
    assert len(rows) == 2 and all(int(f[1]) == r["late"] for f in rows)
    assert int(rows[1][-1]) - int(rows[0][-1]) == 3000       # samples 3 and 4
    assert f"flow {r['late']} is not in recorded samples 1-2" in res.stderr
    assert f"flow {r['late']} is not in recorded sample 5" in res.stderr
    assert "Traceback" not in res.stderr
    # deltavars: the same two samples, the second as a difference
    res = cli("deltavars", str(r["late"]), "--replay", r["path"], "--csv",
              "--vars", "DataOctetsOut")
    assert res.returncode == 0, res.stderr
    rows = [ln.split(",") for ln in res.stdout.splitlines()[1:]]
    assert len(rows) == 2 and int(rows[0][-1]) >= 1000 and int(rows[1][-1]) == 3000
    # a CID in no sample at all is an error, as on a live kernel
    res = cli("deltavars", "987654", "--replay", r["path"])
    assert res.returncode == 1 and "987654" in res.stderr and "none of the 5" in res.stderr


def test_replay_count_stops_early(recording_with_a_late_flow):
    r = recording_with_a_late_flow
    res = cli("deltavars", str(r["steady"]), "--replay", r["path"], "-s", "--count", "2",
              "--vars", "SegsOut")
    assert res.returncode == 0 and len(res.stdout.splitlines()) == 3


def test_stock_extras_are_shown(capsys, tcp_pair):
    lst, cli_sock, _ = tcp_pair
    cid = cid_of(cli_sock.getsockname()[1], lst.getsockname()[1])
    code, out, _ = run(capsys, "readvars", str(cid), "--vars", "CurCwnd,rtt_us")
    assert code == 0
    assert re.search(r"\n\nPerf Table\n\nCurCwnd=\d+\n", out)
    assert re.search(r"\n\nExtras Table\n\n\n\nStock Table\n\nrtt_us=\d+\n$", out)
    code, out, _ = run(capsys, "watchvars", str(cid), "-s", "--count", "1",
                       "--vars", "SegsOut,rtt_us")
    assert out.splitlines()[0] == "sec,usec,SegsOut\trtt_us\t"
    code, out, _ = run(capsys, "watchvars", str(cid), "-s", "--count", "1")
    header = out.splitlines()[0].split("\t")
    assert "rtt_us" in header and header.index("rtt_us") > header.index("sec,usec,SegsOut")
    assert len(out.splitlines()[1].split(",")) == len(header) + 2    # sec, usec, values
    code, out, _ = run(capsys, "watchvars", str(cid), "--count", "1", "--vars", "rtt_us")
    assert re.search(r"\n\n Stock Table\n\nrtt_us=\d+\n", out)


def test_per_connection_csv_has_one_shape(capsys, env):
    """readvars, watchvars and deltavars --csv: logger --csv's columns, one header."""
    want = "time,cid,local_addr,local_port,rem_addr,rem_port,SegsOut,CurMSS"
    for tool, extra in (("readvars", []), ("watchvars", ["--count", "2", "-i", "10"]),
                        ("deltavars", ["--count", "2", "-i", "10"])):
        code, out, err = run(capsys, tool, str(env["cid"]), "--csv", "--vars",
                             "SegsOut,CurMSS", *extra)
        assert code == 0, err
        lines = out.splitlines()
        assert lines[0] == want, tool
        assert len(lines) == (2 if tool == "readvars" else 3)
        for ln in lines[1:]:
            t, cid, la, lp, ra, rp, segs, mss = ln.split(",")
            assert re.fullmatch(r"\d+\.\d{6}", t) and int(cid) == env["cid"]
            assert (la, int(lp), ra, int(rp)) == (*env["local"], *env["remote"])
            assert int(mss) > 0
    code, out, _ = run(capsys, "logger", "--csv", "--count", "1", "--vars", "SegsOut,CurMSS")
    assert out.splitlines()[0] == want


def test_logger_csv_has_clean_column_names_for_pandas(capsys, env):
    pd = pytest.importorskip("pandas")
    import io

    code, out, _ = run(capsys, "logger", "--csv", "--count", "1", "-m", "0x3,0,0,0,0")
    df = pd.read_csv(io.StringIO(out))
    assert list(df.columns) == ["time", "cid", "local_addr", "local_port", "rem_addr",
                                "rem_port", "SegsOut", "DataSegsOut", "Priority"]
    assert env["cid"] in set(df["cid"])
    # the classic header keeps the spec's ", " (see --help); skipinitialspace reads it
    code, out, _ = run(capsys, "logger", "--count", "1", "-m", "0x3,0,0,0,0")
    assert out.startswith("Time, CID, SrcIp, SrcPort, DstIp, DstPort,SegsOut, ")
    assert list(pd.read_csv(io.StringIO(out), skipinitialspace=True).columns)[:2] == [
        "Time", "CID"]


CLASSIC_FORMS = {
    "listconns": "classic: web10g-listconns",
    "listconninfo": "classic: web10g-listconninfo",
    "readvars": "classic: web10g-readvars CID [-m MASK]",
    "watchvars": "classic: web10g-watchvars CID [-m MASK] [-s] [-i INTERVAL_MS]",
    "deltavars": "classic: web10g-deltavars CID [-m MASK] [-s] [-i INTERVAL_MS]",
    "logger": "classic: web10g-logger [-e EXCLUDE_HOST] [-i INTERVAL_MS] [-m MASK] [-h]",
    "getmib": "classic: web10g-getmib",
    "writevar": "classic: web10g-writevar CID VARNAME VALUE",
    "recordwrite": "classic: web10g-record_write CID",
    "recordread": "classic: web10g-record_read",
    "convert": "classic: none",
    "plot": "classic: none",
}


@pytest.mark.parametrize("name", sorted(__import__("web10g.cli").cli.SUBCOMMANDS))
def test_help_is_plain_text_and_names_the_classic_form(capsys, monkeypatch, name):
    monkeypatch.setenv("COLUMNS", "100")        # the help is wrapped to the terminal
    with pytest.raises(SystemExit) as ei:
        web10g_main([name, "--help"])
    out = capsys.readouterr().out
    assert ei.value.code == 0 and out.startswith(f"usage: web10g {name}")
    assert "``" not in out                       # no reST markup from docstrings
    if name in CLASSIC_FORMS:
        assert CLASSIC_FORMS[name] in out
    if name in ("watchvars", "deltavars"):
        assert "classic CSV" in out and "--csv" in out
    if name == "logger":
        assert "pandas" in out and "--csv" in out


@pytest.mark.parametrize("states", [
    "listening", "LISTENING", "big", "all", "connected", "synchronized", "bucket",
    "established", "syn-sent", "syn-recv", "fin-wait-1", "fin-wait-2", "time-wait",
    "closed", "close-wait", "last-ack", "listen", "closing", "established,listening",
    "synrcvd"])
def test_states_take_ss_names(capsys, env, states):
    code, _, err = run(capsys, "listconns", "--states", states)
    assert code == 0, err


def test_states_listening_and_big_select_what_ss_does(capsys, tcp_pair):
    lst, cli_sock, _ = tcp_pair
    port = lst.getsockname()[1]
    cport = cli_sock.getsockname()[1]
    flt = f"sport = :{port} or dport = :{port}"
    # this pair's three sockets only: an earlier test's closing socket may have had one of
    # these port numbers (and a TIME-WAIT socket still in its FIN-WAIT-2 substate passes
    # the kernel's state mask, then may report TIME-WAIT)
    ours = {(port, 0), (port, cport), (cport, port)}

    def states_of(spec):
        code, out, err = run(capsys, "listconns", "--json", "--states", spec, "--filter", flt)
        assert code == 0, err
        rows = [json.loads(ln) for ln in out.splitlines()]
        return sorted(r["state"] for r in rows if (r["local_port"], r["rem_port"]) in ours)

    # rows carry RFC 4898 states: 2 listen, 5 established
    assert states_of("listening") == [2]             # the listener only
    assert states_of("big") == [2, 5, 5]             # the listener and both ends
    assert states_of("bucket") == []                 # no SYN-RECV / TIME-WAIT here
    code, _, err = run(capsys, "listconns", "--states", "listenin")
    assert code == 1 and "unknown TCP state" in err and "listen" in err


def test_state_aliases_select_what_their_targets_select(capsys, tcp_pair):
    # other spellings and the groups, against the states they stand for
    ALIASES = {"listening": "listen", "synrcvd": "synrecv", "SYN_RCVD": "syn-recv",
               "big": ("established", "synsent", "finwait1", "finwait2", "close",
                       "closewait", "lastack", "listen", "closing")}
    lst, _, _ = tcp_pair
    port = lst.getsockname()[1]
    flt = f"sport = :{port} or dport = :{port}"

    def cids(spec):
        code, out, err = run(capsys, "listconns", "--json", "--states", spec, "--filter", flt)
        assert code == 0, err
        return sorted(json.loads(ln)["cid"] for ln in out.splitlines())

    for alias, target in ALIASES.items():
        spelled = target if isinstance(target, str) else ",".join(target)
        assert cids(alias) == cids(spelled), alias
    assert len(cids("big")) == 3 and len(cids("listening")) == 1


def test_recordread_masked_values_are_null_not_zero(capsys, tcp_pair, tmp_path):
    import csv
    import io

    lst, cli_sock, _ = tcp_pair
    cid = cid_of(cli_sock.getsockname()[1], lst.getsockname()[1])
    path = tmp_path / "rec"
    code, text, _ = run(capsys, "recordwrite", str(cid), str(path))
    assert code == 0
    # sock_diag has no SampleRTT: the record masks it, and the text shows '-'
    assert "\nSampleRTT:  -\n" in text and re.search(r"\nSegsOut:  \d+\n", text)
    code, out, _ = run(capsys, "recordread", str(path), "--json")
    rec = json.loads(out)
    assert rec["SampleRTT"] is None and isinstance(rec["SegsOut"], int)
    code, out, _ = run(capsys, "recordread", str(path), "--csv")
    row = next(csv.DictReader(io.StringIO(out)))
    assert row["SampleRTT"] == "" and row["SegsOut"] != ""


EVIL_OWNER = r"""
import ctypes, socket, sys
ctypes.CDLL(None).prctl(15, ctypes.c_char_p(b"\x1b]0;pwn\x07\x1b[2J\xe2\x80\xae"), 0, 0, 0)
lst = socket.create_server(("127.0.0.1", 0))
c = socket.create_connection(lst.getsockname())
s, _ = lst.accept()
print(lst.getsockname()[1], flush=True)
sys.stdin.read()
"""


def test_listconninfo_shows_another_users_process_name_escaped_not_obeyed(capsys):
    # a process names itself with terminal escape sequences (set the window title, clear
    # the screen) and a right-to-left override: whoever lists its flows must not run them
    child = subprocess.Popen([sys.executable, "-c", EVIL_OWNER], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        port = int(child.stdout.readline())
        filt = f"sport = :{port}"
        with open(f"/proc/{child.pid}/comm", "rb") as f:
            assert f.read().startswith(b"\x1b]0;pwn")    # the kernel kept the bytes
        code, out, _ = run(capsys, "listconninfo", "--filter", filt)
        assert code == 0 and str(child.pid) in out
        assert "\x1b" not in out and "\x07" not in out
        assert "\\x1b]0;pwn" in out                     # shown, as an escape
        code, out, _ = run(capsys, "listconninfo", "--filter", filt, "--csv")
        assert code == 0 and "\x1b" not in out and "\u202e" not in out
        assert "\\x1b]0;pwn\\x07\\x1b[2J\\u202e" in out
        code, out, _ = run(capsys, "listconninfo", "--filter", filt, "--json")
        rec = json.loads(out.splitlines()[0])
        assert "\x1b" not in out and rec["command"] == "\x1b]0;pwn\x07\x1b[2J\u202e"
    finally:
        child.stdin.close()
        child.wait(timeout=30)
