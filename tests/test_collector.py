"""`web10g serve` end to end: two collectors in two network namespaces with real traffic,
a real Prometheus server scraping them, and the Parquet dataset read through DuckDB and
Dask; plus the dataset writer, its reader, `web10g convert`, the aggregation and the
configuration on their own.

Every test picks its own flows (a port of its own, or a namespace it creates), never
assumes a quiet machine and never asserts on speed."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

import collector_util as cu  # noqa: E402

import web10g  # noqa: E402
from web10g import rows as _rows  # noqa: E402
from web10g.collector import parquet as pqw  # noqa: E402

VARS = ["HCThruOctetsAcked", "HCThruOctetsReceived", "SegsRetrans", "Timeouts", "rtt_us",
        "CurCwnd", "delivery_rate_bytes_per_s", "SmoothedRTT"]


def _pairs(n: int):
    lst = socket.create_server(("127.0.0.1", 0), backlog=max(n, 16))
    socks = []
    for _ in range(n):
        c = socket.create_connection(lst.getsockname())
        s, _ = lst.accept()
        socks += [c, s]
    return lst, socks


# -- the writer and the reader ---------------------------------------------------------------

def test_dataset_file_layout_types_nulls_and_metadata(tmp_path):
    lst, socks = _pairs(20)
    port = lst.getsockname()[1]
    # a TIME-WAIT socket of the same port: a row with identity only (no tcp_info)
    c = socket.create_connection(("127.0.0.1", port))
    s, _ = lst.accept()
    c.close()
    s.close()
    time.sleep(0.1)
    flt = f"sport = :{port} or dport = :{port}"
    try:
        with web10g.open("sock_diag") as agent:
            dtype = agent.dtype(VARS)
            w = pqw.DatasetWriter(tmp_path, host="t1", dtype=dtype, backend=agent.backend)
            samples = 0
            for _ in range(12):
                rows = _rows.copy(agent.read_all(VARS, filter=flt, states="all"))
                w.add(rows)
                samples += 1
                assert not list(tmp_path.rglob("part-*.parquet"))   # nothing visible yet
            hidden = list(tmp_path.rglob(".part-*"))
            done = w.close()
    finally:
        lst.close()
        for x in socks:
            x.close()
    assert hidden == [] or all(h.name.endswith(".parquet.tmp") for h in hidden)
    assert not list(tmp_path.rglob(".part-*"))
    rel = os.path.relpath(done.path, tmp_path).split(os.sep)
    assert rel[0] == "host=t1" and rel[1].startswith("date=") and rel[2].startswith("hour=")
    assert rel[3].startswith("part-") and rel[3].endswith(".parquet")
    f = pq.ParquetFile(done.path)
    assert f.metadata.num_row_groups == 1                  # not one per sample
    schema = f.schema_arrow
    assert schema.field("timestamp").type == pa.timestamp("ns", tz="UTC")
    assert pa.types.is_string(schema.field("local_addr").type.value_type)
    assert f.metadata.row_group(0).column(0).compression == "ZSTD"
    # statistics where readers filter (time, numeric identity), none on the counters
    # nor on the text columns (every row group spans them)
    rg = f.metadata.row_group(0)
    stats = {rg.column(i).path_in_schema: rg.column(i).is_stats_set
             for i in range(rg.num_columns)}
    assert stats["timestamp"] and stats["local_port"] and stats["rem_port"] and stats["cid"]
    assert not stats["HCThruOctetsAcked"] and not stats["rem_addr"]
    meta = json.loads(schema.metadata[b"web10g"])
    assert meta["web10g_version"] == web10g.__version__
    assert meta["units"]["rtt_us"] == "microseconds"
    assert schema.field("SmoothedRTT").metadata[b"units"] == b"milliseconds"
    t = f.read().to_pandas()
    assert len(t) == done.rows
    tw = t[t["state"] == "timeWait"]
    assert len(tw) and tw["HCThruOctetsAcked"].isna().all()    # not reported: null, not 0
    est = t[t["state"] == "established"]
    assert len(est) == 12 * 40 and est["HCThruOctetsAcked"].notna().all()
    assert set(est["local_addr"]) == {"127.0.0.1"}
    # flow-major: each flow's rows together, in time order
    cids = t["cid"].to_numpy()
    starts = np.flatnonzero(np.r_[True, cids[1:] != cids[:-1]])
    assert len(starts) == len(set(cids))
    for _, g in t.groupby("cid", sort=False):
        assert g["timestamp"].is_monotonic_increasing


def test_row_group_order_kernel_order_or_merged(tmp_path):
    """A row group is flow-major. Samples holding the first one's flows in its order are
    kept as read (the row group is their transpose, in the kernel's order); a sample that
    breaks that order -- a flow gone, one new, the order changed, end-of-flow records --
    switches the row group to (local_port, cid, time) order. Either way every row is
    written once, with its values."""
    with web10g.open("sock_diag") as agent:
        dtype = agent.dtype(VARS)

    def sample(cids, t, ports=None):
        rows = np.zeros(len(cids), dtype)
        rows["cid"] = cids
        rows["family"] = socket.AF_INET
        rows["state"] = 1
        rows["local_port"] = ports if ports is not None else 80 + (np.asarray(cids) % 3)
        rows["timestamp"] = t
        rows["present"] = 0xFFFF
        rows["tcp_info_len"] = 1000
        rows["HCThruOctetsAcked"] = np.asarray(cids, np.uint64) * 1000 + t
        return rows

    kernel = [17, 3, 42, 8, 25, 11]                 # not sorted: the kernel's order
    cases = {
        "same flows": [sample(kernel, t) for t in range(1, 6)],
        "flows change": ([sample(kernel, t) for t in range(1, 4)]
                         + [sample([17, 3, 8, 25, 11, 99], 4),
                            sample([99, 11, 25, 8, 3, 17], 5)]),
        "end records": ([sample(kernel, t) for t in range(1, 3)]
                        + [(sample([42], 3), True), sample(kernel[:2] + kernel[3:], 4)]),
    }
    for name, samples in cases.items():
        root = tmp_path / name.replace(" ", "_")
        w = pqw.DatasetWriter(root, host="o", dtype=dtype)
        want = []
        for s in samples:
            rows, final = s if isinstance(s, tuple) else (s, False)
            w.add(rows, final=final, t_ns=1_700_000_000_000_000_000)
            want += [(int(r["cid"]), int(r["timestamp"]), int(r["HCThruOctetsAcked"]), final)
                     for r in rows]
        t = pq.ParquetFile(w.close().path).read().to_pandas()
        got = list(zip(t["cid"], t["timestamp"].astype("int64"), t["HCThruOctetsAcked"],
                       t["final"]))
        assert sorted(got) == sorted(want), name            # every row once, its values
        cids = t["cid"].tolist()
        runs = [c for i, c in enumerate(cids) if i == 0 or cids[i - 1] != c]
        assert len(runs) == len(set(cids)), name             # flow-major
        for _, g in t.groupby("cid", sort=False):
            assert g["timestamp"].is_monotonic_increasing, name
        if name == "same flows":
            assert runs == kernel                            # the kernel's order, kept
        else:
            key = list(zip(t["local_port"], t["cid"]))
            assert key == sorted(key), name                  # merged (local_port, cid)


def test_columns_without_nulls_are_required_until_their_first_null(tmp_path):
    """A variable column with no nulls is stored as a required Parquet column (no
    definition levels); its first null finishes the file that stores it so and it stays
    nullable from then on. Every row is kept with its value or its null, and
    web10g.dataset reads one nullable schema whichever file comes first."""
    with web10g.open("sock_diag") as agent:
        dtype = agent.dtype(VARS)
    # Timeouts needs a longer tcp_info than the other variables (a newer kernel's):
    # a row whose tcp_info stops short of it has Timeouts null and the rest reported
    need = _rows.presence_of(dtype).min_len["Timeouts"]
    assert need > max(v for k, v in _rows.presence_of(dtype).min_len.items() if k != "Timeouts")

    t0 = 1_700_000_000_000_000_000

    def sample(t, unreported=()):
        rows = np.zeros(4, dtype)
        rows["cid"] = [5, 6, 7, 8]
        rows["family"] = socket.AF_INET
        rows["state"] = 1
        rows["timestamp"] = t0 + t
        rows["present"] = 0xFFFF
        rows["tcp_info_len"] = 1000
        rows["Timeouts"] = np.arange(4) + 10 * t
        for i in unreported:
            rows["tcp_info_len"][i] = need - 8
        return rows

    w = pqw.DatasetWriter(tmp_path, host="n", dtype=dtype, row_group_rows=8)
    plan = [(), (), (1,), (), (), (2, 3), (), ()]       # a row group is two samples
    want = {}
    for k, unreported in enumerate(plan):
        w.add(sample(k, unreported), t_ns=t0 + k)
        for i, cid in enumerate([5, 6, 7, 8]):
            want[(cid, k)] = None if i in unreported else i + 10 * k
    w.close()
    assert w.splits == 1                                 # once for the column, not twice
    files = sorted(w.files, key=lambda f: f.start_ns)
    assert len(files) == 2 and [f.rows for f in files] == [8, 24]
    first, second = (pq.ParquetFile(f.path).schema_arrow for f in files)
    assert not first.field("Timeouts").nullable        # no nulls in its rows
    assert second.field("Timeouts").nullable           # sticky after the first null
    assert not first.field("rtt_us").nullable and not second.field("rtt_us").nullable
    assert files[0].end_ns <= files[1].start_ns
    from web10g import dataset

    ds = dataset(tmp_path)
    assert ds.schema.field("Timeouts").nullable and ds.schema.field("rtt_us").nullable
    assert not ds.schema.field("cid").nullable
    t = ds.to_table(columns=["cid", "timestamp", "Timeouts"])
    ts = t.column("timestamp").cast(pa.int64()).to_pylist()
    got = {(c, s - t0): v for c, s, v in zip(t.column("cid").to_pylist(), ts,
                                             t.column("Timeouts").to_pylist())}
    assert got == want


def test_congestion_control_names_are_stored_as_dictionary_text(tmp_path):
    lst, socks = _pairs(3)
    port = lst.getsockname()[1]
    names = ["reno", "cubic", "reno"]
    for x, cc in zip(socks[::2], names):
        x.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, cc.encode())
    ports = [x.getsockname()[1] for x in socks[::2]]
    try:
        with web10g.open("sock_diag") as agent:
            vars_ = ["SegsOut", "cc_algorithm"]
            with pqw.DatasetWriter(tmp_path, host="cc", dtype=agent.dtype(vars_)) as w:
                for _ in range(3):
                    w.add(_rows.copy(agent.read_all(vars_, filter=f"dport = :{port}")))
    finally:
        lst.close()
        for x in socks:
            x.close()
    f = pq.ParquetFile(next(tmp_path.rglob("part-*.parquet")))
    t = f.schema_arrow.field("cc_algorithm").type
    # a handful of names, like state and family: dictionary-encoded text (pandas: category)
    assert pa.types.is_dictionary(t) and pa.types.is_string(t.value_type)
    df = f.read().to_pandas()
    got = df.sort_values(["local_port", "timestamp"])["cc_algorithm"].astype(str).tolist()
    want = [cc for _, cc in sorted(zip(ports, names)) for _ in range(3)]
    assert got == want


def test_dataset_reader_pushes_filters_down(tmp_path):
    lst, socks = _pairs(5)
    port = lst.getsockname()[1]
    flt = f"sport = :{port} or dport = :{port}"
    try:
        with web10g.open("sock_diag") as agent:
            for host in ("a", "b"):
                with pqw.DatasetWriter(tmp_path, host=host, dtype=agent.dtype(VARS)) as w:
                    for _ in range(3):
                        w.add(_rows.copy(agent.read_all(VARS, filter=flt)))
    finally:
        lst.close()
        for x in socks:
            x.close()
    from web10g import dataset

    ds = dataset(tmp_path)
    assert ds.count_rows() == 2 * 3 * 10
    a = dataset(tmp_path, host="a")
    assert a.count_rows() == 30
    assert set(a.to_pandas(columns=["host"])["host"]) == {"a"}
    assert dataset(tmp_path, port=port).count_rows() == 60
    assert dataset(tmp_path, port=1).count_rows() == 0
    now = time.time()
    assert dataset(tmp_path, start=now - 600, end=now + 600).count_rows() == 60
    assert dataset(tmp_path, start=now + 3600).count_rows() == 0
    # partition pruning: a host filter opens only that host's files
    frags = list(ds.dataset.get_fragments(filter=a.filter))
    assert frags and all("host=a" in fr.path for fr in frags)
    df = a.to_pandas(columns=["timestamp", "rtt_us"])
    assert str(df["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert ds.units("rtt_us") == "microseconds"


def test_convert_writes_the_dataset_layout_and_never_duplicates(tmp_path):
    rec = tmp_path / "x.w10g"
    lst, socks = _pairs(3)
    port = lst.getsockname()[1]
    try:
        with web10g.open("sock_diag") as agent:
            from web10g.recording import Recorder

            with Recorder(rec, agent) as r:
                for _ in range(4):
                    r.sample(filter=f"sport = :{port} or dport = :{port}")
                    time.sleep(0.02)
    finally:
        lst.close()
        for x in socks:
            x.close()
    from web10g.cli import convert

    out = tmp_path / "ds"
    for _ in range(2):                                   # twice: same files, no duplicates
        assert convert.main([str(rec), str(out), "--dataset", "--host", "h"]) == 0
    files = list(out.rglob("*.parquet"))
    assert len(files) == 1 and "host=h" in str(files[0])
    t = pq.read_table(out).to_pandas()
    assert len(t) == 4 * 6 and not t.duplicated(["cid", "timestamp"]).any()
    single = tmp_path / "one.parquet"
    assert convert.main([str(rec), str(single)]) == 0
    f = pq.ParquetFile(single)
    assert f.metadata.num_row_groups == 1
    assert f.schema_arrow.field("timestamp").type == pa.timestamp("ns", tz="UTC")


# -- aggregation -------------------------------------------------------------------------

def _synthetic(agent, cids, acked, state=5, port=80):
    rows = np.zeros(len(cids), dtype=agent.dtype(VARS))
    rows["cid"] = cids
    rows["family"] = socket.AF_INET
    rows["state"] = state
    rows["local_port"] = port
    rows["rem_port"] = 40000
    rows["local_addr"][:, :4] = [10, 0, 0, 1]
    rows["rem_addr"][:, :4] = [192, 0, 2, 9]
    rows["present"] = 0xFFFF
    rows["tcp_info_len"] = 1000
    rows["HCThruOctetsAcked"] = acked
    rows["rtt_us"] = 1500
    rows["CurCwnd"] = 14480
    return rows


def test_counters_fold_closed_flows_and_never_go_backwards():
    from web10g.collector.prometheus import Aggregator

    with web10g.open("sock_diag") as agent:
        agg = Aggregator(VARS, listening=lambda: {80})
        agg.update(_synthetic(agent, [1, 2], [1000, 5000]))     # open before: baseline
        total = lambda: float(agg.totals[:, 0].sum())           # noqa: E731
        assert total() == 0
        agg.update(_synthetic(agent, [1, 2, 3], [1500, 5000, 700]))
        assert total() == 500 + 700                             # new flow counts from 0
        # flow 2 ends: it vanishes from the sample; its final record says 5600
        closed = _synthetic(agent, [2], [5600], state=1)
        agg.update(_synthetic(agent, [1, 3], [1600, 700]), closed)
        assert total() == 1200 + 100 + 600
        # a flow born and gone between two samples counts whole
        agg.update(_synthetic(agent, [1, 3], [1600, 700]), _synthetic(agent, [9], [42], 1))
        assert total() == 1900 + 42
        # a late sample still listing a closed flow does not count it again
        agg.update(_synthetic(agent, [1, 2, 3], [1600, 5600, 700]))
        assert total() == 1942
        labels = agg.group_labels[0]
        assert labels == ("80", "192.0.2.0/24", "established")
        fams = {f.name: f for f in agg.families()}
        rtt = fams["web10g_flow_rtt_seconds"]
        count = [s for s in rtt.samples if s.name.endswith("_count")]
        assert sum(s.value for s in count) == 2 + 3 + 2 + 2 + 2   # flow-samples


def test_series_budget_folds_groups_and_counts_drops():
    from web10g.collector.prometheus import Aggregator

    with web10g.open("sock_diag") as agent:
        probe = Aggregator(VARS)
        budget = probe.per_group * 3 + 5
        agg = Aggregator(VARS, keys=["remote_port"], series_budget=budget, top_k=5)
        rows = _synthetic(agent, np.arange(1, 11), np.arange(10) * 100)
        rows["rem_port"] = np.arange(10) + 1000
        agg.update(rows)
        agg.update(rows)
        assert agg.series <= budget
        assert len(agg.group_labels) == 3 and ("other",) in agg.group_labels
        assert agg.series_dropped >= 8 * agg.per_group
        fams = {f.name: f for f in agg.families()}
        dropped = fams["web10g_exporter_series_dropped"].samples[0].value
        assert dropped == agg.series_dropped


def _same_state(fast, ref, where: str) -> None:
    """Everything the exporter shows is equal on both aggregators."""
    assert fast.group_labels == ref.group_labels, where
    np.testing.assert_array_equal(fast.totals, ref.totals, err_msg=where)
    np.testing.assert_array_equal(fast.flows, ref.flows, err_msg=where)
    for a, b in zip(fast.hcounts, ref.hcounts):
        np.testing.assert_array_equal(a, b, err_msg=where)
    for a, b in zip(fast.hsums, ref.hsums):
        np.testing.assert_allclose(a, b, rtol=1e-12, err_msg=where)
    assert fast.closed_folded == ref.closed_folded, where
    assert fast.series_dropped == ref.series_dropped, where
    assert fast.top == ref.top, where


@pytest.mark.parametrize("keys,top_k,groups", [
    (("local_port", "remote_net", "state"), 0, 6),
    (("remote_port", "local_addr"), 4, 6),
    (("state",), 2, 2),
], ids=["default-keys", "port-addr-top4", "state-top2"])
def test_fast_fold_equals_reference_fold(keys, top_k, groups):
    """The aggregator's fold in C (the default) against its numpy formulation (the
    reference), over 60 random samples: flows come and go (with an end-of-flow record
    at once, later, twice, or never), counters grow and wrap, some rows report nothing
    or lack a variable, groups appear past the series budget, the listening ports
    change, and time passes beyond the tombstones' life. Every state the exporter
    shows must be equal after every sample."""
    from web10g.collector.prometheus import TOMBSTONE_SECONDS, Aggregator

    rng = np.random.default_rng(11)
    listening = {80}
    with web10g.open("sock_diag") as agent:
        probe = Aggregator(VARS)
        kw = dict(keys=keys, top_k=top_k, series_budget=probe.per_group * groups + 3 * top_k,
                  listening=lambda: listening)
        fast, ref = Aggregator(VARS, **kw), Aggregator(VARS, fast=False, **kw)
        assert fast.fast and not ref.fast
        live = {int(c): int(rng.integers(0, 1 << 20)) for c in range(1, 41)}
        pending: list[tuple[int, int, int]] = []     # (due step, cid, final acked)
        next_cid, now = 100, 1000.0
        for step in range(60):
            now += 130.0 if step % 20 == 19 else 0.1
            if step == 30:
                listening = {80, 8080}
            for c in list(live):
                if rng.random() < 0.1:           # this flow ends
                    final = live.pop(c) + int(rng.integers(0, 500))
                    if rng.random() < 0.8:       # its record comes now, or much later
                        due = step + (int(rng.integers(15, 30)) if rng.random() < 0.2 else 0)
                        pending.append((due, c, final))
            for _ in range(int(rng.integers(0, 6))):
                live[next_cid] = int(rng.integers(0, 1000))
                next_cid += 1
            for c in live:
                live[c] += int(rng.integers(0, 3)) * int(rng.integers(0, 4000))
            # the kernel's order, not the cids'; a flow may miss a sample and come back
            cids = np.array(sorted((c for c in live if rng.random() > 0.05),
                                   key=lambda c: (c * 7919) % 101), np.uint64)
            if step == 45 and pending:           # a late sample still lists a closed flow
                cids = np.append(cids, np.uint64(pending[0][1]))
            rows = _synthetic(agent, cids, [live.get(int(c), 0) for c in cids])
            n = len(rows)
            rows["local_port"] = rng.choice([80, 8080, 40000, 40001], n)
            rows["rem_port"] = 50000 + (cids % 9).astype(np.uint16)
            rows["state"] = rng.choice([1, 1, 1, 4, 8], n)
            v6 = cids % 5 == 0
            rows["family"][v6] = socket.AF_INET6
            rows["rem_addr"][v6] = np.frombuffer(socket.inet_pton(socket.AF_INET6,
                                                                  "2001:db8::9"), np.uint8)
            rows["rem_addr"][:, 2] = (cids % 3).astype(np.uint8)
            rows["SegsRetrans"] = (cids * np.uint64(step * 977)) % np.uint64(1 << 32)
            rows["Timeouts"] = step // 7
            rows["HCThruOctetsReceived"] = cids * np.uint64(step)
            rows["rtt_us"] = rng.integers(1, 3_000_000, n)
            rows["CurCwnd"] = rng.integers(0, 1 << 27, n)
            rows["delivery_rate_bytes_per_s"] = rng.integers(0, 1 << 34, n)
            rows["present"][rng.random(n) < 0.1] = 0
            rows["tcp_info_len"][rng.random(n) < 0.1] = 8
            closed = None
            due = [p for p in pending if p[0] <= step]
            if due and rng.random() < 0.7:
                take = due[:int(rng.integers(1, len(due) + 1))]
                pending = [p for p in pending if p not in take]
                if rng.random() < 0.3:
                    take.append(take[0])         # the same end-of-flow record twice
                closed = _synthetic(agent, [c for _, c, _ in take], [a for _, _, a in take],
                                    1)
                closed["SegsRetrans"] = 3
            for agg in (fast, ref):
                agg.update(rows.copy(), None if closed is None else closed.copy(), now=now)
            _same_state(fast, ref, f"step {step}")
        # idle flows: the same sample again and again (the fast fold's caches), then an
        # end-of-flow record for a flow the samples still list (the caches must see it)
        idle = rows.copy()
        idle["present"][0], idle["tcp_info_len"][0] = 0xFFFF, 1000     # a reported flow
        listed = _synthetic(agent, idle["cid"][:1], idle["HCThruOctetsAcked"][:1] + 9, 1)
        counted = []
        for step, closed in enumerate([None, None, None, listed, None, None]):
            now += 0.1
            for agg in (fast, ref):
                agg.update(idle.copy(), None if closed is None else closed.copy(), now=now)
            _same_state(fast, ref, f"idle {step}")
            counted.append(int(fast.flows.sum()))
        assert counted == [counted[0]] * 4 + [counted[0] - 1] * 2   # the closed one is out
        # what the test set out to exercise happened
        assert ref.closed_folded > 5 and ref.series_dropped > 0 and ref.totals.sum() > 0
        assert len(ref.limbo) + len(fast._ft) > 0
        assert now - 1000.0 > TOMBSTONE_SECONDS


def test_flow_table_grows_expires_and_refuses_bad_arrays():
    """The C fold's table grows past its first size and forgets what expired; arrays of
    the wrong shape, type or group range are refused with an error, never read."""
    from web10g import _aggregate as ag

    ft = ag.FlowTable([64, 32], ag.K_STATE, 24, 64, socket.AF_INET6)
    n = 50_000
    cid = np.arange(1, n + 1, dtype=np.uint64)
    state = np.ones(n, np.uint8)
    gids = np.empty(n, np.int64)
    new = ft.groups(cid, None, None, state, None, None, None, gids)
    assert list(new) == [0] and gids[0] == -1 and (gids[1:] == -1).all()
    ft.add_key(0, 0, None, None, state, None, None, None)
    ft.groups(cid, None, None, state, None, None, None, gids)
    assert (gids == 0).all() and ft.keys == 1
    vals = np.stack([cid * 10, cid % 7], axis=1).astype(np.uint64)
    totals, flows = np.zeros((1, 2)), np.zeros(1, np.int64)
    ft.fold(cid, gids, vals, False, 1.0, totals, flows)
    assert len(ft) == n and ft.open_flows == n and flows[0] == n
    assert totals[0, 0] == float((cid * 10).sum())
    # half the flows vanish: limbo; they close later: tombstones; then they expire
    ft.fold(cid[::2].copy(), gids[::2].copy(), vals[::2].copy(), False, 2.0, totals, flows)
    assert ft.limbo == n // 2 and ft.open_flows == n // 2
    assert ft.state(2) == ("limbo", [20, 2], 0)
    folded = ft.fold_closed(cid[1::2].copy(), gids[1::2].copy(), vals[1::2] + 5, False, 3.0,
                            totals)
    assert folded == n // 2 and ft.tombs == n // 2 and ft.limbo == 0
    ft.expire(2.5)
    assert ft.tombs == n // 2
    ft.expire(3.5)
    assert ft.tombs == 0 and len(ft) == n // 2 and ft.state(2) == (None, None, None)
    # refused
    bad = np.full(n // 2, 7, np.int64)
    with pytest.raises(ValueError, match="out of range"):
        ft.fold(cid[::2].copy(), bad, vals[::2].copy(), False, 4.0, totals, flows)
    with pytest.raises(ValueError, match="disagree"):
        ft.fold(cid, gids[:10].copy(), vals, False, 4.0, totals, flows)
    with pytest.raises(ValueError, match="key column"):
        ft.groups(cid, None, None, None, None, None, None, gids)
    with pytest.raises(ValueError, match="contiguous bytes"):
        ft.groups(cid, None, None, state[:10].copy(), None, None, None, gids)
    with pytest.raises(ValueError, match="histogram 0"):
        ft.fold(cid, gids, vals, False, 4.0, totals, flows, [np.zeros(n)],
                [np.array([1.0])], [np.zeros((1, 5), np.int64)], [np.zeros(1)])
    with pytest.raises(ValueError, match="at most 4"):
        ag.FlowTable([64] * 5, 0, 24, 64, socket.AF_INET6)
    with pytest.raises(ValueError, match="row number"):
        ft.add_key(-3, 0, None, None, state, None, None, None)
    with pytest.raises(ValueError, match="contiguous bytes"):
        ft.add_key(n, 0, None, None, state, None, None, None)


def _parsed(text: str, openmetrics: bool):
    """(family name, type, HELP, sorted samples) of an exposition, as the client parses it."""
    if openmetrics:
        from prometheus_client.openmetrics.parser import text_string_to_metric_families
    else:
        from prometheus_client.parser import text_string_to_metric_families
    out = []
    for f in text_string_to_metric_families(text):
        samples = sorted((s.name, tuple(sorted(s.labels.items())), s.value) for s in f.samples)
        out.append((f.name, f.type, f.documentation, samples))
    return out


@pytest.mark.parametrize("openmetrics", [False, True], ids=["text-0.0.4", "openmetrics"])
def test_fast_render_equals_prometheus_client_rendering(openmetrics):
    """Aggregator.render() writes the exposition itself (the exporter's hot path); it
    must say exactly what prometheus_client says of Aggregator.families(): same families,
    HELP, types, label sets and values, in both formats, with labels that need escaping,
    IPv4 and IPv6 groups, top-K flows and dropped series."""
    from prometheus_client.exposition import generate_latest
    from prometheus_client.openmetrics.exposition import generate_latest as om_latest

    from web10g.collector.prometheus import Aggregator, _Registry

    with web10g.open("sock_diag") as agent:
        probe = Aggregator(VARS)
        agg = Aggregator(VARS, keys=["local_port", "remote_net", "state", "remote_port"],
                         listening=lambda: {80}, top_k=3,
                         series_budget=probe.per_group * 4 + 3 * 3,
                         const_labels={"host": 'we"ird\\host\nname', "zone": "b"})
        a = _synthetic(agent, [1, 2, 3, 4], [100, 200, 300, 400])
        a["local_port"][1] = 41000                     # a client-side flow: "ephemeral"
        a["family"][2] = socket.AF_INET6
        a["rem_addr"][2] = np.frombuffer(socket.inet_pton(socket.AF_INET6, "2001:db8::7"),
                                         np.uint8)
        a["rem_port"][3] = 40001
        agg.update(a)
        b = a.copy()
        b["HCThruOctetsAcked"] += np.array([1000, 3_000_000, 50, 0], np.uint64)
        b["rtt_us"] = [100, 2_000_000, 75_000, 1]
        more = _synthetic(agent, [10, 11, 12], [5, 6, 7])
        more["rem_port"] = [50000, 50001, 50002]       # past the budget: "other"
        agg.update(np.concatenate([b, more]), _synthetic(agent, [4], [900], state=1))
        assert ("other",) * 4 in agg.group_labels and agg.series_dropped
        assert agg.top
        ours = agg.render(openmetrics)
        theirs = (om_latest if openmetrics else generate_latest)(_Registry([agg.families]))
        theirs = theirs.decode()
        if openmetrics:
            assert theirs.endswith("# EOF\n")
            ours += "# EOF\n"
        assert _parsed(ours, openmetrics) == _parsed(theirs, openmetrics)
        assert len(ours.splitlines()) == len(theirs.splitlines())
        assert '\\"' in ours and "\\n" in ours           # the host label, escaped


def test_toml_config_and_flags(tmp_path):
    from web10g.cli.serve import config_from_args, parser

    cfg = tmp_path / "c.toml"
    cfg.write_text('interval = 0.5\nhost = "x1"\n[parquet]\ndir = "/tmp/d"\n'
                   'rotate_seconds = 60\n[prometheus]\nlisten = "127.0.0.1:1"\n'
                   'keys = ["state"]\nseries_budget = 100\n')
    c = config_from_args(parser("t").parse_args(["--config", str(cfg), "--interval", "2"]))
    assert (c.interval, c.host, c.parquet, c.rotate_seconds, c.prometheus, c.prom_keys,
            c.series_budget) == (2.0, "x1", "/tmp/d", 60, "127.0.0.1:1", ["state"], 100)
    bad = tmp_path / "bad.toml"
    bad.write_text("[parquet]\nbogus = 1\n")
    with pytest.raises(ValueError, match="bogus"):
        config_from_args(parser("t").parse_args(["--config", str(bad)]))
    with pytest.raises(ValueError, match="no sink"):
        config_from_args(parser("t").parse_args([]))


# -- one collector, end to end -----------------------------------------------------------

def test_serve_parquet_and_prometheus_end_to_end(tmp_path):
    pytest.importorskip("prometheus_client")
    duckdb = pytest.importorskip("duckdb")
    port, mport = cu.free_port(), cu.free_port()
    n = 3_000_000
    traffic = cu.Traffic(port, n, hold=1.0)
    ds = tmp_path / "ds"
    serve = cu.Serve(tmp_path, "--parquet", str(ds), "--prometheus", f"127.0.0.1:{mport}",
                     "--interval", "0.2", "--host", "solo", "--top-k", "3",
                     "--filter", f"sport = :{port} or dport = :{port}")
    try:
        time.sleep(1.5)                       # the listener is known before traffic moves
        traffic.go()
        traffic.wait("done")
        traffic.wait("closed")
        deadline = time.monotonic() + 20
        while True:
            text = cu.scrape(mport)
            got = sum(cu.metric_values(text, "web10g_flow_bytes_received_total",
                                       local_port=str(port)))
            if got >= n or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert n <= got <= n + 2, got
        acked = sum(cu.metric_values(text, "web10g_flow_bytes_acked_total",
                                     local_port="ephemeral"))
        assert n <= acked <= n + 2
        assert cu.metric_values(text, "web10g_collector_samples_total")[0] > 0
        assert "# HELP web10g_flow_bytes_acked_total Bytes acknowledged" in text
        om = cu.scrape(mport, accept="application/openmetrics-text; version=1.0.0")
        assert om.rstrip().endswith("# EOF")
        assert serve.terminate() == 0
    finally:
        serve.close()
        traffic.close()
    ev = [e["event"] for e in serve.events()]
    assert "stopped" in ev and "file_written" in ev
    q = duckdb.sql(f"""
        SELECT host, cid, max(HCThruOctetsReceived) AS rx, bool_or(final) AS fin
        FROM read_parquet('{ds}/**/*.parquet', hive_partitioning = true)
        WHERE local_port = {port} AND rem_port <> 0
        GROUP BY host, cid""").fetchall()
    assert len(q) == 1 and q[0][0] == "solo" and n <= q[0][2] <= n + 1 and q[0][3]


# -- the whole route: two namespaces, Prometheus, DuckDB and Dask --------------------------

@pytest.mark.skipif(cu.can_netns() is not None, reason=str(cu.can_netns()))
def test_two_collectors_in_two_namespaces_prometheus_duckdb_dask(tmp_path):
    pytest.importorskip("prometheus_client")
    duckdb = pytest.importorskip("duckdb")
    if cu.prometheus_binary() is None:
        pytest.skip("no prometheus server (apt-get install prometheus; "
                    "tools/install-collector-deps.sh)")
    dd = pytest.importorskip("dask.dataframe")
    distributed = pytest.importorskip("dask.distributed")
    tag = f"{os.getpid() % 100000}"
    port = 5201
    sizes = {"a": 4_000_000, "b": 7_500_000}
    ds = tmp_path / "ds"
    mports = {h: cu.free_port() for h in sizes}
    with cu.netns(f"w10g-a-{tag}") as ns_a, cu.netns(f"w10g-b-{tag}") as ns_b:
        nss = {"a": ns_a, "b": ns_b}
        traffic = {h: cu.Traffic(port, sizes[h], hold=1.5, netns=nss[h]) for h in sizes}
        serves = {}
        prom = None
        try:
            for h in sizes:
                serves[h] = cu.Serve(tmp_path, "--netns", nss[h], "--host", h,
                                     "--parquet", str(ds), "--interval", "0.2",
                                     "--prometheus", f"127.0.0.1:{mports[h]}",
                                     "--rotate-seconds", "2", name=f"serve-{h}")
            prom = cu.PrometheusServer(mports)
            time.sleep(1.5)
            for t in traffic.values():
                t.go()
            for t in traffic.values():
                t.wait("done")
            for t in traffic.values():
                t.wait("closed")
            q = (f'sum by (host) (web10g_flow_bytes_received_total{{local_port="{port}"}})')
            deadline = time.monotonic() + 30
            while True:
                res = {r["metric"].get("host"): float(r["value"][1]) for r in prom.query(q)}
                if all(res.get(h, 0) >= sizes[h] for h in sizes) or \
                        time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            for h, n in sizes.items():
                assert n <= res.get(h, 0) <= n + 2, (h, res)
            up = prom.query("up")
            assert len(up) == 2 and all(r["value"][1] == "1" for r in up)
            flows = prom.query('sum(web10g_flows{state="established"})')
            assert flows                             # the gauge is there too
            for h in sizes:
                assert serves[h].terminate() == 0
        finally:
            for s in serves.values():
                s.close()
            for t in traffic.values():
                t.close()
            if prom is not None:
                prom.close()
    # DuckDB: hive partitions, per-flow bytes and throughput, RTT percentiles by host
    glob = f"{ds}/**/*.parquet"
    rows = duckdb.sql(f"""
        WITH f AS (
          SELECT host, cid, max(HCThruOctetsReceived) AS rx,
                 max(HCThruOctetsReceived) / greatest(epoch(max(timestamp))
                                                      - epoch(min(timestamp)), 1e-3) AS bps
          FROM read_parquet('{glob}', hive_partitioning = true)
          WHERE local_port = {port} AND rem_port <> 0
          GROUP BY host, cid)
        SELECT host, count(*), max(rx), max(bps) FROM f GROUP BY host ORDER BY host
        """).fetchall()
    assert [r[0] for r in rows] == ["a", "b"]
    for host, nflows, rx, bps in rows:
        assert nflows == 1 and sizes[host] <= rx <= sizes[host] + 1 and bps > 0
    rtt = duckdb.sql(f"""
        SELECT host, quantile_cont(rtt_us, 0.5), quantile_cont(rtt_us, 0.99),
               count(DISTINCT date), min(hour)
        FROM read_parquet('{glob}', hive_partitioning = true)
        WHERE rtt_us IS NOT NULL GROUP BY host ORDER BY host""").fetchall()
    assert [r[0] for r in rtt] == ["a", "b"] and all(r[1] > 0 for r in rtt)
    # Dask on a distributed LocalCluster: the same per-flow numbers across hosts
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster):
        df = dd.read_parquet(str(ds), columns=["cid", "local_port", "rem_port", "timestamp",
                                               "HCThruOctetsReceived", "rtt_us", "host"],
                             filters=[("local_port", "==", port)])
        df = df[df["rem_port"] != 0]                     # not the listener
        per_flow = df.groupby(["host", "cid"]).agg(
            {"HCThruOctetsReceived": "max", "timestamp": ["min", "max"]}).compute()
        per_flow.columns = ["rx", "t0", "t1"]
        per_flow = per_flow.reset_index()
        per_flow["bps"] = per_flow["rx"] / (per_flow["t1"] - per_flow["t0"]).dt.total_seconds(
        ).clip(lower=1e-3)
        got = {str(h): int(v) for h, v in zip(per_flow["host"], per_flow["rx"])}
        assert set(got) == {"a", "b"}
        for h, n in sizes.items():
            assert n <= got[h] <= n + 1
        p = df["rtt_us"].dropna().astype("float64").quantile([0.5, 0.99]).compute()
        assert (p > 0).all()


def test_serve_help_and_bad_config_exit_1(tmp_path):
    r = subprocess.run([sys.executable, "-m", "web10g", "serve"], capture_output=True,
                       text=True, env=cu.env(), cwd=str(cu.ROOT))
    assert r.returncode == 1 and "no sink" in r.stderr
    # a config that is no config: refused with what it is, not read without end
    not_toml = tmp_path / "passwd"
    not_toml.write_text("root:x:0:0:root:/root:/bin/bash\n")
    binary = tmp_path / "binary"
    binary.write_bytes(b"\x7fELF\x02\x01\x01\x00\xff\xfe")
    for path, says in (("/dev/zero", "/dev/zero: more than 1,048,576 bytes"),
                       (str(not_toml), f"{not_toml}: not valid TOML"),
                       (str(binary), f"{binary}: not UTF-8 text")):
        r = subprocess.run([sys.executable, "-m", "web10g", "serve", "--config", path],
                           capture_output=True, text=True, env=cu.env(), cwd=str(cu.ROOT),
                           timeout=60)
        assert r.returncode == 1 and says in r.stderr, r.stderr
        assert "Traceback" not in r.stderr


@pytest.mark.parametrize("raw", [b"[" * 200_000, b"not json", b'"a string"',
                                 b'{"units": ["not", "a", "dict"]}',
                                 b'{"units": {"rtt_us": 5}}'])
def test_dataset_metadata_someone_else_planted_is_ignored_not_raised(tmp_path, raw):
    # a shared dataset directory: a file whose web10g metadata is hostile or foreign
    part = tmp_path / "host=x" / "date=2026-01-01" / "hour=00"
    part.mkdir(parents=True)
    table = pa.table({"timestamp": pa.array([1], pa.timestamp("ns", tz="UTC")),
                      "rtt_us": pa.array([7], pa.uint32())})
    pq.write_table(table.replace_schema_metadata({b"web10g": raw}),
                   part / "part-0.parquet")
    from web10g import dataset

    ds = dataset(tmp_path)
    assert ds.count_rows() == 1
    assert isinstance(ds.metadata, dict)
    assert ds.units("rtt_us") == ""


def test_a_partition_directory_planted_as_a_link_is_refused(tmp_path):
    # a dataset root others can write (here: anyone): someone links the next partition
    # level elsewhere, hoping a root collector writes its files there
    from web10g.collector import parquet as pqw
    root = tmp_path / "ds"
    (root / "host=h").mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    from web10g import mib
    rows = np.zeros(3, mib.dtype(["SegsOut"], identity=True, timestamp=True))
    rows["cid"] = [1, 2, 3]
    rows["timestamp"] = time.time_ns()
    day = time.strftime("%Y-%m-%d", time.gmtime(rows["timestamp"][0] / 1e9))
    os.symlink(elsewhere, root / "host=h" / f"date={day}")
    with pytest.raises(OSError, match="symbolic link, not a partition directory"):
        pqw.write_dataset(iter([rows]), root, host="h", writer_id="t")
    assert list(elsewhere.iterdir()) == []
    os.unlink(root / "host=h" / f"date={day}")
    files = pqw.write_dataset(iter([rows]), root, host="h", writer_id="t")
    assert len(files) == 1 and pq.read_table(files[0].path).num_rows == 3


# -- retention ----------------------------------------------------------------------------

def _part(root, host: str, day: str, hour: int, name: str, size: int):
    d = root / f"host={host}" / f"date={day}" / f"hour={hour:02d}"
    d.mkdir(parents=True, exist_ok=True)
    p = d / f"part-{name}.parquet"
    p.write_bytes(b"x" * size)
    return p


def test_prune_deletes_the_oldest_of_this_host_only_and_follows_no_link(tmp_path):
    import datetime as dt

    from web10g.collector.parquet import prune

    root = tmp_path / "ds"
    now = int(dt.datetime(2026, 12, 6, 12, 30, tzinfo=dt.timezone.utc).timestamp()) * 10**9
    old = _part(root, "a", "2026-12-04", 23, "1", 100)     # ended 36.5 h before now
    mid = _part(root, "a", "2026-12-06", 9, "2", 100)      # ended 2.5 h before now
    new = _part(root, "a", "2026-12-06", 12, "3", 100)     # the hour still open
    newest = _part(root, "a", "2026-12-06", 12, "4", 100)
    theirs = _part(root, "b", "2026-12-01", 0, "9", 100)   # another host's: never touched
    other = root / "host=a" / "date=2026-12-06" / "hour=09" / "notes.txt"
    other.write_text("not ours")                            # not a part file: kept
    tmp = root / "host=a" / "date=2026-12-06" / "hour=09" / ".part-5-p1-0.parquet.tmp"
    tmp.write_text("a writer's open window")                # not ours to prune
    # links planted by someone who can write the dataset: followed by nothing
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "hour=00").mkdir()
    precious = victim / "hour=00" / "part-0.parquet"
    precious.write_bytes(b"p" * 1000)
    (root / "host=a" / "date=2026-01-01").symlink_to(victim)
    (root / "host=a" / "date=2026-12-06" / "hour=09" / "part-0.parquet").symlink_to(precious)

    r = prune(str(root), "a", keep_hours=24, now_ns=now)
    assert (r.files, r.bytes, r.errors) == (1, 100, [])
    assert not old.exists() and not old.parent.exists() and not old.parent.parent.exists()
    assert mid.exists() and new.exists() and theirs.exists() and other.exists()
    assert tmp.exists() and precious.read_bytes() == b"p" * 1000
    # the byte budget: the oldest go first, never the file just written
    r = prune(str(root), "a", keep_bytes=150, now_ns=now, protect=[str(mid)])
    assert r.files == 2 and not new.exists() and not newest.exists()
    assert mid.exists() and r.kept_bytes == 100
    r = prune(str(root), "a", keep_bytes=150, keep_hours=1, now_ns=now)
    assert r.files == 1 and not mid.exists()
    assert other.exists() and tmp.exists() and theirs.exists() and precious.exists()
    assert prune(str(root), "nobody-here", keep_hours=1).files == 0


def test_retention_flags_and_toml(tmp_path):
    from web10g.cli.serve import config_from_args, parser

    cfg = tmp_path / "c.toml"
    cfg.write_text('[parquet]\ndir = "/tmp/d"\nretain_hours = 168\nretain_bytes = 1000\n')
    c = config_from_args(parser("t").parse_args(["--config", str(cfg)]))
    assert (c.retain_hours, c.retain_bytes) == (168, 1000)
    c = config_from_args(parser("t").parse_args(["--parquet", "d", "--retain-bytes", "2GiB"]))
    assert (c.retain_hours, c.retain_bytes) == (None, 2 << 30)
    with pytest.raises(ValueError, match="retention"):
        config_from_args(parser("t").parse_args(["--parquet", "d", "--retain-hours", "0"]))
