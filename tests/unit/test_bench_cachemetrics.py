"""Issue 12, item 6: cache metrics are results (sampled, turned into tidy columns, compared, gated).

The ``dmsetup status`` and table lines are the recorded lab lines of tests/unit/data/cache (Debian 6.1);
blockstat-vda.txt is a real /sys/block/vda/stat line (host kernel 6.18, 17 fields). No iSCSI disk was
at hand for ``lsblk``: its output here follows lsblk's raw format (``MAJ:MIN TRAN``, an empty TRAN
printed as nothing), checked on this machine for a virtio disk ("254:0 ").
"""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path

import pytest
from bench_fixtures import make_run
from boundary import assert_one_error, skycache
from fakes import FakeRunner

from skycache.bench import cachemetrics, comparable, compare, plots, report, scenario, stacks, store, tidy
from skycache.storage.caches import cachestatus

DATA = Path(__file__).parent / "data"
CACHE = DATA / "cache"
STEADY = [1000.0, 1010.0, 990.0, 1005.0]
RC = "skycache-rc-benchnode-bench-base"


def line(name: str) -> str:
    return (CACHE / name).read_text()


# -- counters and their parsing ----------------------------------------------------------------


def test_block_sizes_of_the_recorded_tables() -> None:
    assert cachestatus.block_bytes(line("wc-table.txt")) == 4096
    assert cachestatus.block_bytes(line("cache-wb-table.txt")) == 512 * 512
    with pytest.raises(cachestatus.StatusParseError):
        cachestatus.block_bytes("0 100 linear 7:0 0")


def test_real_block_stat_line_gives_read_and_write_sectors() -> None:
    st = cachemetrics.parse_block_stat((DATA / "bench" / "blockstat-vda.txt").read_text())
    assert (st.read_sectors, st.write_sectors) == (353537930, 2122182816)
    with pytest.raises(cachemetrics.CounterError):
        cachemetrics.parse_block_stat("1 2 3")


def test_lsblk_inverse_keeps_each_iscsi_disk_once() -> None:
    text = "254:7 \n254:5 \n8:16 iscsi\n254:3 \n8:0 iscsi\n8:16 iscsi\n7:1 \n"
    assert cachemetrics.parse_lsblk_iscsi(text) == ["8:16", "8:0"]


def test_repo_devices_per_transport_and_argv() -> None:
    r = FakeRunner().reply("lsblk", "--inverse", stdout="254:5 \n8:0 iscsi\n")
    r.reply("cat", stdout="0 0 8 0 0 0 0 0 0 0 0\n")
    assert cachemetrics.repo_devices(r, "iscsi", "lvm", "/dev/mapper/skycache-vm-bench1") == ["8:0"]
    assert r.ran("query")[-2:] == [
        "lsblk --inverse --noheadings --raw -o MAJ:MIN,TRAN /dev/mapper/skycache-vm-bench1",
        "cat /sys/dev/block/8:0/stat",  # readable: checked once, here
    ]
    r.reply("stat", stdout="254:1\n")
    assert cachemetrics.repo_devices(r, "local", "file", "/var/tmp/x.img") == ["254:1"]
    r.reply("lsblk", "--nodeps", stdout="254:2\n")
    assert cachemetrics.repo_devices(r, "local", "lvm", "/dev/bench/img") == ["254:2"]
    r.reply("stat", rc=1, stderr="no such file")
    assert cachemetrics.repo_devices(r, "local", "file", "/nope") == []  # NaN columns, not a guess
    # a file on tmpfs: a device number with no block device (no stat file) is dropped at build
    r.reply("stat", stdout="0:45\n").reply("cat", rc=1, stderr="No such file or directory")
    assert cachemetrics.repo_devices(r, "local", "file", "/tmp/x.img") == []


def test_a_sample_reads_each_cache_and_the_repository_counters() -> None:
    stat = (DATA / "bench" / "blockstat-vda.txt").read_text()
    r = FakeRunner().reply("dmsetup", "status", RC, stdout=line("cache-wb-dirty.txt"))
    r.reply("dmsetup", "status", "skycache-wb-bench1", stdout=line("wc-dirty.txt"))
    r.reply("cat", stdout=stat + stat)
    out = cachemetrics.take(r, [("read", RC), ("write", "skycache-wb-bench1")], ["8:0", "8:16"])
    assert r.ran("query")[-1] == "cat /sys/dev/block/8:0/stat /sys/dev/block/8:16/stat"
    read, write, repo = out
    assert (read["role"], read["read_hits"], read["read_misses"], read["promotions"]) == (
        "read",
        454,
        242,
        49,
    )
    assert read["dirty"] == 46 and read["block_bytes"] == 512 * 512
    assert (write["role"], write["dirty"]) == ("write", 4080 - 2480)
    assert repo["role"] == "repo" and repo["read_bytes"] == 2 * 353537930 * 512
    assert json.loads(json.dumps(out)) == out  # plain JSON for conditions.jsonl


def test_a_missing_cache_is_skipped_and_a_bad_stat_leaves_no_repo_sample() -> None:
    r = FakeRunner().reply("dmsetup", "status", rc=1, stderr="Device does not exist")
    r.reply("cat", stdout="garbage\n")
    with pytest.raises(cachemetrics.CounterError):
        cachemetrics.block_stats(r, ["8:0"])
    assert cachemetrics.take(r, [("read", RC)], ["8:0"]) == []
    with pytest.raises(cachemetrics.CounterError):
        cachemetrics.block_stats(r, ["../../etc/passwd"])


# -- deltas -> columns --------------------------------------------------------------------------


def _samples(status_file: str, repo_read: int, dirty_file: str) -> list[dict[str, object]]:
    r = FakeRunner().reply("dmsetup", "status", RC, stdout=line(status_file))
    r.reply("dmsetup", "status", "skycache-wb-bench1", stdout=line(dirty_file))
    r.reply("cat", stdout=f"0 0 {repo_read} 0 0 0 8 0 0 0 0\n")
    return cachemetrics.take(r, [("read", RC), ("write", "skycache-wb-bench1")], ["8:0"])


def test_columns_are_deltas_over_the_measured_run() -> None:
    before = _samples("cache-wb-fresh.txt", 1000, "wc-fresh.txt")  # hits 1, misses 47, promotions 2
    after = _samples("cache-wb-dirty.txt", 3000, "wc-dirty.txt")  # hits 454, misses 242, promotions 49
    cols = cachemetrics.measured(before, after)
    assert cols["rc_hit_ratio"] == pytest.approx(453 / (453 + 195))
    assert cols["rc_promotions"] == 47
    assert cols["wb_dirty_end"] == 1600
    assert cols["repo_read_bytes"] == 2000 * 512


def test_columns_of_a_stack_without_caches_are_absent_not_zero() -> None:
    assert cachemetrics.measured([], []) == {}
    repo_only = [{"role": "repo", "read_bytes": 10.0}]
    assert cachemetrics.measured(repo_only, [{"role": "repo", "read_bytes": 4106.0}]) == {
        "repo_read_bytes": 4096.0
    }
    # no read between the samples: the ratio is undefined, not 0
    same = _samples("cache-wt.txt", 1, "wc-fresh.txt")
    assert "rc_hit_ratio" not in cachemetrics.measured(same, same)


def test_hosts_add_up_per_host_pairs() -> None:
    b = [{"role": "repo", "host": h, "read_bytes": 0.0} for h in ("a:1", "b:1")]
    a = [
        {"role": "repo", "host": "a:1", "read_bytes": 100.0},
        {"role": "repo", "host": "b:1", "read_bytes": 50.0},
    ]
    assert cachemetrics.measured(b, a)["repo_read_bytes"] == 150.0
    assert cachemetrics.merge_flushes(
        [{"wb_flush_s": 1.0}, {"wb_flush_s": 2.5, "wb_flushed_bytes": 4096.0}]
    ) == {
        "wb_flush_s": 3.5,
        "wb_flushed_bytes": 4096.0,
    }


# -- the sampler thread -------------------------------------------------------------------------


def test_sampler_polls_until_stopped_then_stops_cleanly() -> None:
    calls = []
    third = threading.Event()

    def take() -> list[dict[str, object]]:
        calls.append(len(calls))
        if len(calls) == 3:
            third.set()
        return [{"n": len(calls)}]

    sampler = cachemetrics.Sampler(take, interval_s=0.01).start()
    assert third.wait(5)
    samples = sampler.stop()
    n = len(calls)
    assert [s["n"] for s in samples] == list(range(1, n + 1))
    assert sampler.error == "" and not sampler._thread.is_alive()  # type: ignore[union-attr]


def test_sampler_stops_at_the_first_error_and_keeps_the_samples() -> None:
    r = FakeRunner().replies(
        "cat", replies=["0 0 8 0 0 0 0 0 0 0 0\n", "0 0 16 0 0 0 0 0 0 0 0\n", "not a stat line\n"]
    )
    done = threading.Event()

    def take() -> list[dict[str, object]]:
        try:
            return [{"read": s.read_sectors} for s in cachemetrics.block_stats(r, ["8:0"])]
        except cachemetrics.CounterError:
            done.set()
            raise

    with cachemetrics.Sampler(take, interval_s=0.01) as sampler:
        assert done.wait(5)
    assert [s["read"] for s in sampler.samples] == [8, 16]
    assert "not a block device stat line" in sampler.error
    assert len(r.ran("query")) == 3  # not retried after the error


# -- the flush at teardown ----------------------------------------------------------------------


def test_the_write_back_flush_is_timed_and_its_bytes_counted() -> None:
    wb = "skycache-wb-bench1"
    r = FakeRunner().reply("dmsetup", "table", wb, stdout=line("wc-table.txt"))
    # dirty count, the flush's first reading, then the wait: cleaning, clean
    r.replies(
        "dmsetup",
        "status",
        wb,
        replies=[line("wc-dirty.txt")] * 2 + [line("wc-dirty.txt"), line("wc-clean.txt")],
    )
    r.replies("cat", replies=["0 0 0 0 0 0 100 0 0 0 0\n", "0 0 0 0 0 0 12900 0 0 0 0\n"])
    built = stacks.BuiltStack(
        scenario.Stack(name="s", backend="lvm", transport="iscsi", write_cache="32M"),
        "/dev/mapper/skycache-vm-bench1",
        caches=[("write", wb)],
        runner=r,  # type: ignore[arg-type]
        vm_id="bench1",
        repo_devices=["8:0"],
    )
    built.flush_write_cache()
    assert "dmsetup message skycache-wb-bench1 0 cleaner" in r.ran()
    assert built.flush["wb_flushed_bytes"] == (12900 - 100) * 512
    assert built.flush["wb_flush_dirty_bytes"] == 1600 * 4096
    assert built.flush["wb_flush_s"] >= 0


# -- tidy, compare, gate, report, plots ---------------------------------------------------------


def _with_cache_metrics(run: Path, values: dict[str, list[dict[str, float]]]) -> Path:
    """Give a synthetic run's records cache metrics (per label, one dict per repetition)."""
    rd = store.RunDir(run)
    recs = list(rd.records())
    for rec in recs:
        if rec["label"] in values:
            rec["cache_metrics"] = values[rec["label"]][rec["rep"] - 1]
    (run / store.RECORDS).write_text("".join(json.dumps(r) + "\n" for r in recs))
    tidy.write(rd, tidy.build(rd))
    return run


def _repo(mib: list[float], hit: float = 0.8) -> list[dict[str, float]]:
    return [{"repo_read_bytes": m * 2**20, "rc_hit_ratio": hit + i * 0.01} for i, m in enumerate(mib)]


def test_tidy_rows_carry_the_columns_and_nan_without_the_cache(tmp_path: Path) -> None:
    run = make_run(tmp_path, {"cached": STEADY, "plain": STEADY})
    _with_cache_metrics(run, {"cached": _repo([10, 11, 9, 10])})
    df = tidy.load(run)
    for col in cachemetrics.COLUMNS:
        assert col in df.columns
    cached = df[df["label"] == "cached"].sort_values(["rep", "direction"])
    # one value per repetition, on both of its rows (randrw: read and write)
    assert list(cached["repo_read_bytes"] / 2**20) == [10, 10, 11, 11, 9, 9, 10, 10]
    assert df[df["label"] == "plain"]["rc_hit_ratio"].isna().all()
    assert "repo_read_bytes" in (run / tidy.TIDY_CSV).read_text().splitlines()[0]


def test_compare_has_cache_metrics_only_where_both_sides_have_the_cache(tmp_path: Path) -> None:
    run = make_run(tmp_path, {"cached": STEADY, "plain": STEADY})
    _with_cache_metrics(run, {"cached": _repo([10, 11, 9, 10])})
    comps = compare.compare(tidy.load(run), "plain")
    assert {c.metric for c in comps} >= {"iops"}
    assert not [c for c in comps if c.metric in compare.CACHE_METRICS]


def _gate_pair(tmp_path: Path, new_mib: list[float]) -> tuple[Path, Path]:
    base = _with_cache_metrics(
        make_run(tmp_path / "a", {"c": STEADY}, run_id="ci"), {"c": _repo([10, 11, 9, 10])}
    )
    new = _with_cache_metrics(make_run(tmp_path / "b", {"c": STEADY}, run_id="ci"), {"c": _repo(new_mib)})
    return base, new


def test_the_gate_fails_when_the_cache_stops_caching_although_iops_hold(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    base, new = _gate_pair(tmp_path, [50, 52, 49, 51])
    result = skycache(capsys, "bench", "compare", base, new, "--fail-on-regression", "30")
    assert result.code == 3, result
    assert "regression: c [read] repo_read_per_byte" in result.err
    assert "iops" not in result.err
    data = json.loads(skycache(capsys, "bench", "compare", base, new, "--json").out)
    hit = [c for c in data["comparisons"] if c["metric"] == "rc_hit_ratio"]
    assert len(hit) == 1 and hit[0]["direction"] == "read"  # once per repetition, not per direction
    # the same numbers again: an A/A pair passes
    same, again = _gate_pair(tmp_path / "aa", [10, 11, 9, 10])
    assert skycache(capsys, "bench", "compare", same, again, "--fail-on-regression", "30").code == 0


def test_the_gate_can_be_asked_for_a_cache_metric_but_not_one_without_a_worse_side(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    base, new = _gate_pair(tmp_path, [50, 52, 49, 51])
    only_iops = skycache(
        capsys, "bench", "compare", base, new, "--fail-on-regression", "30", "--metric", "iops"
    )
    assert only_iops.code == 0, only_iops
    asked = skycache(
        capsys, "bench", "compare", base, new, "--fail-on-regression", "30", "--metric", "repo_read_per_byte"
    )
    assert asked.code == 3 and "repo_read_per_byte" in asked.err
    assert_one_error(
        skycache(
            capsys, "bench", "compare", base, new, "--fail-on-regression", "30", "--metric", "rc_promotions"
        ),
        "--metric 'rc_promotions' has no better or worse side",
        code=2,
    )


def test_zero_repository_reads_are_compared_with_the_floor_not_dropped(tmp_path: Path) -> None:
    base, new = _gate_pair(tmp_path, [0, 0, 0, 0])
    comps = compare.compare(comparable.identify_runs(tidy.load([base, new])))
    (c,) = [c for c in comps if c.metric == "repo_read_per_byte"]
    assert c.ratio.dropped == 0 and c.ratio.n_a == 4
    assert c.ratio.ratio < 0.01 and c.verdict == "better"
    assert c.mean == pytest.approx(0.0, abs=1e-6)


def test_report_has_a_cache_table(tmp_path: Path) -> None:
    run = make_run(tmp_path, {"cached": STEADY, "plain": STEADY})
    _with_cache_metrics(run, {"cached": _repo([10, 11, 9, 10])})
    text = report.finish(run)[2].read_text()
    assert "### Caches" in text
    row = next(ln for ln in text.splitlines() if ln.startswith("| cached | 4 |"))
    assert "81.5% [80.0%, 83.0%]" in row and "10.0 MiB [9.0 MiB, 11.0 MiB]" in row
    summary = report.cache_summary(tidy.load(run))
    assert list(summary["label"]) == ["cached"]  # the uncached stack has no row
    assert math.isnan(summary["wb_flush_s_mean"].iloc[0])


def test_cache_plot_draws_the_repository_reads_one_line_per_repetition(tmp_path: Path) -> None:
    samples = [
        {"t": 10.0 * rep + dt, "label": "c", "role": role, "rep": rep, "when": "during",
         "hits": 5 * dt, "dirty": 0, "read_bytes": 2**20 * (100 * rep + dt)}
        for rep in (1, 2) for dt in range(4) for role in ("read", "repo")
    ]  # fmt: skip
    lines = plots.timeline_lines(samples)
    assert [name for name, _ in lines] == ["c (read cache)", "c (repository)"] * 2
    for _, g in lines:
        assert g["rep"].nunique() == 1 and list(g["t_rep"]) == [0.0, 1.0, 2.0, 3.0]
    out = plots.cache_timeline(samples, {}, tmp_path / "cache.png")
    assert out is not None and out.stat().st_size > 0


def test_repository_reads_per_byte_read_divide_by_what_the_workload_read(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # a time-based run on a faster machine reads more in total: only the per-byte figure is gated
    run = make_run(tmp_path, {"cached": STEADY, "plain": STEADY})
    _with_cache_metrics(run, {"cached": _repo([10, 11, 9, 10])})
    df = tidy.load(run)
    rows = df[(df["label"] == "cached") & (df["direction"] == "read")].sort_values("rep")
    read = rows["io_bytes"].to_numpy(dtype=float)
    assert list(rows["repo_read_per_byte"]) == pytest.approx(list(rows["repo_read_bytes"] / read))
    assert df[df["label"] == "plain"]["repo_read_per_byte"].isna().all()
    base, new = _gate_pair(tmp_path / "raw", [50, 52, 49, 51])
    assert_one_error(
        skycache(
            capsys, "bench", "compare", base, new, "--fail-on-regression", "30", "--metric", "repo_read_bytes"
        ),
        "--metric 'repo_read_bytes' has no better or worse side",
        code=2,
    )
