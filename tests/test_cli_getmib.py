"""web10g getmib: classic output, JSON, the dispatcher, exit codes."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from web10g import __version__, mib
from web10g.cli import main as web10g_main
from web10g.cli.getmib import main as getmib


def run(capsys, argv, entry=web10g_main):
    code = entry(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_builtin_head_is_the_classic_format(capsys):
    code, out, _ = run(capsys, ["getmib", "--builtin"])
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == ("TCP Extended Statistics (RFC 4898) contains 6 table(s) "
                        "comprised of 124 variables.")
    assert lines[1] == "Performance Table:"
    assert lines[2] == "\tSegsOut\t(2)"
    tune = lines.index("Tune Table:")
    assert lines[tune:tune + 5] == ["Tune Table:", "\tLimCwnd\t(3)", "\tLimRwin\t(3)",
                                    "\tLimMSS\t(3)", "Extras Table:"]
    assert lines[-1] == "\tPriority\t(4)"
    assert sum(1 for ln in lines if ln.startswith("\t")) == 124


def test_builtin_old_layout_has_other_reductions(capsys):
    code, out, _ = run(capsys, ["getmib", "--builtin", "old"])
    assert code == 0
    assert "\tOtherReductions\t(2)" in out and "\tOtherReductionsCM\t(2)" in out
    assert "LostRetransmitSegs" not in out


def test_sock_diag_listing_matches_the_registry(capsys):
    code, out, _ = run(capsys, ["getmib", "--backend", "sock_diag"])
    assert code == 0
    names = {ln.split("\t")[1] for ln in out.splitlines() if ln.startswith("\t")}
    # every variable; tcp_info_len is a metadata column of the rows, not a variable
    expected = {v.name for v in mib.variables(backend="sock_diag")} - {"tcp_info_len"}
    assert names == expected
    assert "SmoothedRTT" in names and "SampleRTT" not in names and "rtt_us" in names


def test_auto_picks_sock_diag_on_a_stock_kernel(capsys):
    _, auto, _ = run(capsys, ["getmib"])
    _, sd, _ = run(capsys, ["getmib", "--backend", "sock_diag"])
    assert auto == sd


def test_json_output(capsys):
    code, out, _ = run(capsys, ["getmib", "--builtin", "--json"])
    assert code == 0
    data = json.loads(out)
    assert len(data) == 124
    srtt = next(d for d in data if d["name"] == "SmoothedRTT")
    assert srtt["table"] == "perf" and srtt["index"] == 16 and srtt["units"] == "milliseconds"
    assert srtt["rfc_name"] == "tcpEStatsPerfSmoothedRTT"
    assert srtt["sock_diag"]["match"] == "exact"


def test_estats_without_the_module_fails_loudly(capsys, monkeypatch):
    monkeypatch.delenv("WEB10G_ESTATS_PEER", raising=False)
    code, out, err = run(capsys, ["getmib", "--backend", "estats"])
    assert code == 1 and out == ""
    assert "tcp_estats" in err and "modprobe tcp_estats_nl" in err


def test_bad_option_exits_1_with_usage(capsys):
    with pytest.raises(SystemExit) as ei:
        getmib(["--bogus"])
    assert ei.value.code == 1
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err


def test_dispatcher_help_version_and_unknown(capsys):
    code, out, _ = run(capsys, ["--help"])
    assert code == 0 and "getmib" in out
    code, out, _ = run(capsys, ["--version"])
    assert code == 0 and out.strip() == f"web10g {__version__}"
    code, _, err = run(capsys, ["getmb"])
    assert code == 1 and "did you mean: getmib" in err
    code, out, _ = run(capsys, [])
    assert code == 1 and "usage:" in out


def test_module_entry_point_runs():
    res = subprocess.run([sys.executable, "-m", "web10g", "getmib", "--builtin", "middle"],
                         capture_output=True, text=True, check=False)
    assert res.returncode == 0
    assert "comprised of 122 variables." in res.stdout.splitlines()[0]


def test_estats_getmib_prints_the_modules_init(capsys, fake_kernel_factory, monkeypatch):
    fk = fake_kernel_factory("middle")
    monkeypatch.setenv("WEB10G_ESTATS_PEER", str(fk.portid))
    code, out, _ = run(capsys, ["getmib"])
    assert code == 0
    assert out.splitlines()[0].endswith("comprised of 122 variables.")
    assert "LostRetransmitSegs" not in out and "\tRackTimeout" not in out
    code, out, _ = run(capsys, ["getmib", "--json"])
    data = json.loads(out)
    assert len(data) == 122 and data[0] == {"table": "perf", "index": 0, "name": "SegsOut",
                                            "type_code": 2}


def test_csv_output(capsys, fake_kernel_factory, monkeypatch):
    import csv
    import io

    code, out, _ = run(capsys, ["getmib", "--builtin", "--csv"])
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert out.startswith("table,index,name,type_code,")
    assert len(rows) == 124
    assert {k: rows[0][k] for k in ("table", "index", "name", "type_code")} == {
        "table": "perf", "index": "0", "name": "SegsOut", "type_code": "2"}
    srtt = next(r for r in rows if r["name"] == "SmoothedRTT")
    assert srtt["sock_diag_match"] == "exact" and srtt["units"] == "milliseconds"
    monkeypatch.delenv("WEB10G_ESTATS_PEER", raising=False)
    code, out, _ = run(capsys, ["getmib", "--backend", "sock_diag", "--csv"])
    names = {r["name"] for r in csv.DictReader(io.StringIO(out))}
    # as the text listing: every variable (tcp_info_len is a metadata column)
    assert code == 0 and names == {v.name for v in mib.variables(backend="sock_diag")} - {
        "tcp_info_len"}
    fk = fake_kernel_factory("middle")
    monkeypatch.setenv("WEB10G_ESTATS_PEER", str(fk.portid))
    code, out, _ = run(capsys, ["getmib", "--csv"])
    lines = out.splitlines()
    assert code == 0 and lines[:2] == ["table,index,name,type_code", "perf,0,SegsOut,2"]
    assert len(lines) == 123
    with pytest.raises(SystemExit) as ei:
        getmib(["--csv", "--json"])
    assert ei.value.code == 1


ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("argv", [["getmib", "--json"], ["getmib", "--csv"], ["getmib"],
                                  ["--help"], ["getmib", "--help"], ["readvars", "--help"]])
def test_a_reader_that_goes_away_ends_the_tool_quietly(argv):
    """stdout is a pipe whose reader is gone before the tool writes: no traceback, no
    'Exception ignored' from the final flush, exit status 0."""
    import os

    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("WEB10G_ESTATS_PEER", None)
    proc = subprocess.Popen([sys.executable, "-m", "web10g", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    proc.stdout.close()                 # the reader is gone before a byte is written
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(timeout=60) == 0, err
    assert err == ""


def test_piped_into_head(tmp_path):
    import os

    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("WEB10G_ESTATS_PEER", None)
    for cmd in ("getmib --json", "--help"):
        res = subprocess.run(["bash", "-c", f"{sys.executable} -m web10g {cmd} | head -1"],
                             capture_output=True, text=True, env=env, timeout=60)
        assert res.stdout.count("\n") == 1
        assert "Traceback" not in res.stderr and "Error" not in res.stderr
