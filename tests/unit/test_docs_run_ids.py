"""Run ids and figures quoted in README.md and docs/*.md (issue 17): every run id names a run committed
under results/ (or says, next to it, that the run is not committed), and the figures quoted from a
committed run are what the project's own commands compute from it today."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from boundary import skycache
from docblocks import ROOT, doc_files

# A run id as `skycache bench run` names runs; one inside a longer name (a crash file's
# skycache-crash-<UTC>-<hex>.txt) is not a run id.
RUN_ID = re.compile(r"(?<![\w-])(\d{8}T\d{6}Z)(?![\w-])")
RESULT_PATH = re.compile(r"results/[\w.-]+/[\w.-]*\w")
NOT_COMMITTED = "not committed"
# Result paths quoted as examples of a format, not as runs.
EXAMPLE_PATHS = {"results/bench/r1": "docs/sim.md, the calibration format's example source"}
QUICKSTART = "results/quickstart/20261125T164441Z"
NAT = "results/nat-bench/20261125T122106Z"


def committed_runs() -> dict[str, Path]:
    return {p.name: p for p in (ROOT / "results").glob("*/*") if (p / "manifest.json").is_file()}


def paragraphs(text: str) -> list[str]:
    """Blank-line separated blocks (a table or a fenced block without blank lines is one)."""
    return [p for p in re.split(r"\n\s*\n", text) if p.strip()]


def quoted_run_ids() -> list[tuple[str, str, bool]]:
    """(file, run id, whether its paragraph or a neighbouring one says the run is not committed)."""
    out = []
    for f in doc_files():
        paras = paragraphs(f.read_text())
        for i, para in enumerate(paras):
            near = " ".join(paras[max(0, i - 1) : i + 2]).replace("\n", " ")
            for m in RUN_ID.finditer(para):
                out.append((f.relative_to(ROOT).as_posix(), m[1], NOT_COMMITTED in near))
    return out


def test_docs_quote_run_ids() -> None:
    ids = {rid for _, rid, _ in quoted_run_ids()}
    assert {"20261125T164441Z", "20261125T122106Z"} <= ids, ids


@pytest.mark.parametrize("where,run_id,marked", quoted_run_ids())
def test_quoted_run_id_is_committed_or_marked(where: str, run_id: str, marked: bool) -> None:
    if run_id in committed_runs():
        return
    assert marked, (
        f"{where}: run {run_id} is not under results/: point the text at a committed run "
        f"(find results -maxdepth 2) or say '{NOT_COMMITTED}' next to it"
    )


def test_quoted_result_paths_exist() -> None:
    missing = []
    for f in doc_files():
        for m in RESULT_PATH.finditer(f.read_text()):
            path = m[0]
            if path in EXAMPLE_PATHS or (not RUN_ID.search(path) and not path.endswith("/baseline")):
                continue
            if not (ROOT / path).exists():
                missing.append(f"{f.relative_to(ROOT)}: {path}")
    assert not missing, missing


# -- figures quoted from committed runs ------------------------------------------------------------


def _section(doc: str, heading: str) -> str:
    text = (ROOT / doc).read_text()
    start = text.index(f"\n{heading}\n")
    nxt = re.search(r"\n## ", text[start + 1 :])
    return text[start : start + 1 + nxt.start()] if nxt else text[start:]


def _table(section: str, first_header: str) -> list[list[str]]:
    """The body rows of the markdown table whose header row starts with ``first_header``."""
    for para in paragraphs(section):
        lines = [line.strip() for line in para.splitlines() if line.strip().startswith("|")]
        if lines and lines[0].startswith(first_header):
            return [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    raise AssertionError(f"no table starting {first_header!r}")


def _json(capsys: pytest.CaptureFixture[str], *args: str) -> object:
    done = skycache(capsys, *args, "--json")
    assert done.code == 0, done
    return json.loads(done.out)


QUICKSTART_SECTION = ("docs/bench.md", "## Measured: the quickstart in the lab")


def test_bench_md_quickstart_means_are_the_committed_ones(capsys: pytest.CaptureFixture[str]) -> None:
    rows = _table(_section(*QUICKSTART_SECTION), "| condition | dir | n | IOPS geo mean")
    shown = _json(capsys, "bench", "show", str(ROOT / QUICKSTART))
    assert isinstance(shown, list)
    want = {
        (r["condition"], r["direction"]): [
            str(r["n"]),
            f"{r['iops']:.0f} [{r['iops_lo']:.0f}, {r['iops_hi']:.0f}]",
            f"{100 * r['iops_cv']:.0f}%",
            f"{r['lat_mean_us']:.0f} [{r['lat_lo_us']:.0f}, {r['lat_hi_us']:.0f}]",
            f"{r['clat_p99_ns'] / 1000:.0f}",
        ]
        for r in shown
    }
    assert len(rows) == len(want)
    for cond, direction, *figures in rows:
        assert figures == want[(cond, direction)], (cond, direction)


def test_bench_md_quickstart_ratios_are_the_committed_ones(capsys: pytest.CaptureFixture[str]) -> None:
    rows = _table(_section(*QUICKSTART_SECTION), "| condition | ratio [95% CI]")
    comparisons = _json(capsys, "bench", "compare", str(ROOT / QUICKSTART), "--metric", "iops")
    assert isinstance(comparisons, dict)
    want = {
        c["condition"]: [
            f"{c['ratio']:.2f}x [{c['ci_low']:.2f}, {c['ci_high']:.2f}]",
            f"{c['p']:.3f}",
            f"{c['p_adj']:.3f}",
            f"{100 * c['cv']:.0f}%/{100 * c['baseline_cv']:.0f}%",
            c["verdict"],
        ]
        for c in comparisons["comparisons"]
        if c["metric"] == "iops"
    }
    assert len(rows) == len(want)
    for label, *figures in rows:
        assert figures == want[label.split(" (")[0]], label


def test_bench_md_baseline_repetitions_are_the_committed_ones() -> None:
    import skycache.bench

    section = _section(*QUICKSTART_SECTION)
    m = re.search(r"randread repetitions were (\d+), (\d+) and (\d+) IOPS \(CV (\d+) %\)", section)
    assert m, "the quote of the baseline's repetitions moved"
    df = skycache.bench.load(ROOT / QUICKSTART)
    base = df[(df["label"] == "lvm-iscsi/randread/cold") & (df["direction"] == "read")]
    reps = base.groupby("rep")["iops"].sum().sort_values()
    assert [str(round(v)) for v in reps] == list(m.groups()[:3])


def _nat_table() -> str:
    section = _section("docs/net.md", "### Measured (lab, TCG, 2 vCPUs, Debian 6.1 kernel)")
    assert NAT in section
    (block,) = re.findall(r"```[^\n]*\n(metric .*?)\n```", section, flags=re.S)
    return str(block)


def test_net_md_nat_table_is_the_committed_summary() -> None:
    assert _nat_table() == (ROOT / NAT / "summary.txt").read_text().rstrip("\n")


def test_committed_nat_summary_is_what_its_tidy_table_gives() -> None:
    import pandas as pd

    from skycache.bench import natbench

    manifest = json.loads((ROOT / NAT / "manifest.json").read_text())
    rows = natbench.summarize(pd.read_parquet(ROOT / NAT / "tidy.parquet"))
    reps = int(manifest["options"]["repetitions"])
    assert natbench.format_table(rows, reps) == _nat_table()


def test_sim_md_nat_calibration_is_the_committed_one(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    text = (ROOT / "docs" / "sim.md").read_text()
    quote = r'Adding `(\S+)` gives\s+`nat.cpu_per_packet = "([^"]+)"` and `cpu_per_conn = "([^"]+)"`'
    m = re.search(quote, text)
    assert m, "the quote of the NAT calibration moved"
    out = tmp_path / "cal.toml"
    done = skycache(capsys, "sim", "calibrate", str(ROOT / QUICKSTART), str(ROOT / m[1]), "-o", str(out))
    assert done.code == 0, done
    written = out.read_text()
    assert f'cpu_per_packet = "{m[2]}"' in written
    assert f'cpu_per_conn = "{m[3]}"' in written
