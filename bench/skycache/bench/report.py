"""report.md: a run written up as a short results section (pure: data in, Markdown out)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from skycache import files
from skycache.bench import compare, latency, stats
from skycache.bench.progress import Steps, quiet
from skycache.errors import InvalidInput


def comparison_table(
    comparisons: Sequence[compare.Comparison], metrics: Sequence[str] = ("iops", "lat_mean_ns")
) -> str:
    """A Markdown table of ratios to the baseline, one row per condition x direction x metric."""
    lines = [
        "| condition | baseline | dir | metric | geo mean | baseline geo mean | ratio [95% CI] (method) "
        "| p (Holm) | CV | verdict |",
        "|---|---|---|---|---:|---:|---|---:|---:|---|",
    ]
    for c in comparisons:
        if c.metric not in metrics:
            continue
        value, base = compare.fmt_metric(c.metric, c.mean), compare.fmt_metric(c.metric, c.base_mean)
        lines.append(
            f"| {c.condition} | {c.baseline} | {c.direction} | {c.metric} | {value} | {base} "
            f"| {c.ratio.fmt()} | {compare.fmt_p(c.ratio.p_adj)} | {compare.fmt_cvs(c.ratio)} | {c.verdict} |"
        )
    return "\n".join(lines)


def fmt_cv(x: Any, unstable: bool = False) -> str:
    """A CV (a pandas cell: float or NaN) in percent, marked when it makes the condition unstable."""
    text = "-" if math.isnan(float(x)) else f"{float(x) * 100:.0f}%"
    return text + (" unstable" if unstable else "")


def summary_table(summary: pd.DataFrame) -> str:
    lines = [
        "| condition | dir | n | IOPS geo mean [95% CI] | IOPS CV | mean latency us, geo mean [95% CI] "
        "| p99 us |",
        "|---|---|---:|---|---:|---|---:|",
    ]
    for r in summary.itertuples():
        cv = fmt_cv(r.iops_cv, bool(r.unstable))
        lines.append(
            f"| {r.condition} | {r.direction} | {r.n} | {r.iops:.0f} [{r.iops_lo:.0f}, {r.iops_hi:.0f}] "
            f"| {cv} | {r.lat_mean_us:.0f} [{r.lat_lo_us:.0f}, {r.lat_hi_us:.0f}] | {r.lat_p99_us:.0f} |"
        )
    return "\n".join(lines)


_CACHE_HEADERS = {
    "rc_hit_ratio": "read hit ratio",
    "rc_promotions": "promotions",
    "wb_dirty_end": "dirty blocks at end",
    "wb_flush_s": "flush s",
    "wb_flushed_bytes": "flushed MiB",
    "repo_read_bytes": "repository read MiB",
    "repo_read_per_byte": "repository read per byte read",
}


def cache_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Per run x condition: n measured repetitions and, per cache metric, the mean, min and max over
    them (one value per repetition: the tidy table repeats it on each job and direction row)."""
    cols = [c for c in compare.CACHE_METRICS if c in df.columns]
    need = {"status", "run_id", "label", "rep"}
    if not cols or not need <= set(df.columns):
        return pd.DataFrame()
    d = df[df["status"] == "ok"]
    if "phase" in d.columns:
        d = d[d["phase"] == "measure"]
    d = d.drop_duplicates(["run_id", "label", "rep"])
    d = d[d[cols].notna().any(axis=1)]
    if d.empty:
        return pd.DataFrame()
    g = d.groupby(["run_id", "label"], sort=False)[cols]
    out = g.agg(["mean", "min", "max"])
    out.columns = [f"{col[0]}_{col[1]}" for col in out.columns]
    out["n"] = g.size()
    return out.reset_index()


def _cache_cell(metric: str, mean: float, lo: float, hi: float) -> str:
    if math.isnan(mean):
        return "-"
    text = compare.fmt_metric(metric, mean)
    if lo == hi:
        return text
    return f"{text} [{compare.fmt_metric(metric, lo)}, {compare.fmt_metric(metric, hi)}]"


def cache_table(summary: pd.DataFrame) -> str:
    """Markdown: one row per condition, the cache metrics' mean [min, max] over the repetitions."""
    metrics = [m for m in _CACHE_HEADERS if f"{m}_mean" in summary.columns]
    lines = [
        "| condition | n | " + " | ".join(_CACHE_HEADERS[m] for m in metrics) + " |",
        "|---|---:|" + "---:|" * len(metrics),
    ]
    for r in summary.to_dict("records"):
        cells = [_cache_cell(m, r[f"{m}_mean"], r[f"{m}_min"], r[f"{m}_max"]) for m in metrics]
        lines.append(f"| {r['label']} | {r['n']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def auto_line(manifest: Mapping[str, Any]) -> str:
    """With repetitions = "auto": the rule's outcome and the conditions that did not get there
    ("" for a run of fixed repetitions)."""
    auto = manifest.get("auto_repetitions")
    if not isinstance(auto, dict):
        return ""
    head = (
        f"auto repetitions: {auto.get('rounds_run', '?')} rounds run ({auto.get('min_repetitions', '?')} "
        f"to {auto.get('max_repetitions', '?')}), target: every IOPS ratio interval within "
        f"{auto.get('target_ci_pct', '?')}% of the ratio"
    )
    missing = auto.get("not_reached")
    if not isinstance(missing, dict) or "rounds_run" not in auto:
        return head + "; not evaluated (the run stopped before its first check)"
    if not missing:
        return head + "; every condition got there"
    parts = [f"{label} ({why})" for label, why in missing.items()]
    return head + f"; {len(parts)} did not get there: " + ", ".join(parts)


def _resumed_lines(manifest: Mapping[str, Any]) -> list[str]:
    out = []
    only = manifest.get("only")
    if isinstance(only, dict):
        kept = only.get("baselines_added") or []
        out.append(
            f"- Only: {' OR '.join(only.get('filters', []))}"
            + (f" (baselines kept: {', '.join(map(str, kept))})" if kept else "")
            + "."
        )
    for r in manifest.get("resumed", []) if isinstance(manifest.get("resumed"), list) else []:
        if isinstance(r, dict):
            out.append(
                f"- {r.get('mode', 'resume')} at {r.get('at', '?')}: {r.get('skipped', 0)} repetitions "
                f"skipped, {r.get('planned', '?')} planned."
            )
    return out


def _findings(comparisons: Sequence[compare.Comparison]) -> list[str]:
    out = []
    for c in comparisons:
        if c.metric != "iops":
            continue
        if c.ratio.unstable:
            out.append(
                f"- {c.condition} ({c.direction}) vs {c.baseline}: {c.verdict}, no conclusion "
                f"({c.ratio.fmt()})."
            )
        elif c.ratio.significant:
            word = "more" if c.ratio.ratio > 1 else "fewer"
            pct = abs(c.ratio.ratio - 1) * 100
            out.append(
                f"- **{c.condition}** ({c.direction}): {pct:.0f}% {word} IOPS than {c.baseline} "
                f"({c.ratio.fmt()}, Holm-adjusted p {compare.fmt_p(c.ratio.p_adj)})."
            )
        else:
            out.append(f"- {c.condition} ({c.direction}) vs {c.baseline}: not significant ({c.ratio.fmt()}).")
    return out


def _cache_section(df: pd.DataFrame, comparisons: Sequence[compare.Comparison]) -> list[str]:
    summary = cache_summary(df)
    if summary.empty:
        return []
    parts = [
        "### Caches",
        "",
        'Per repetition, over its measured fio run (docs/bench.md, "Cache metrics"): read hit ratio '
        "and promotions of the read cache (deltas of dmsetup status just before and after fio), the "
        "write-back cache's unwritten blocks at the end, its flush at teardown (time, and bytes written "
        "to the repository devices meanwhile), and bytes read from the repository devices (block "
        "counters). Mean [min, max] of the repetitions:",
        "",
        cache_table(summary),
        "",
    ]
    cache_comps = [c for c in comparisons if c.metric in compare.CACHE_METRICS]
    if cache_comps:
        parts += [
            "Cache metrics compared like IOPS (Welch t on log values, Holm per metric; counts that can be "
            "0 get a floor added first: docs/bench.md):",
            "",
            comparison_table(cache_comps, compare.CACHE_METRICS),
            "",
        ]
    return parts


def render(
    manifest: Mapping[str, Any],
    df: pd.DataFrame,
    comparisons: Sequence[compare.Comparison],
    plots: Sequence[Path],
    run_dir: Path,
    *,
    baseline: str | None,
) -> str:
    env = manifest.get("environment", {})
    shaping = manifest.get("shaping", {})
    failed = df[df["status"] != "ok"] if "status" in df.columns else df.iloc[0:0]
    summary = latency.mean_summary(df)
    n_ok = int((df["status"] == "ok").sum()) if "status" in df.columns else len(df)
    parts = [
        f"# {manifest.get('scenario', '?')}: results of run {manifest.get('run_id', '?')}",
        "",
        str(manifest.get("description", "")).strip(),
        "",
        "## Setup",
        "",
        f"- Where: {env.get('where', '?')} ({env.get('accel', '?')}), kernel {env.get('kernel', '?')}, "
        f"{env.get('fio_version') or '?'}, skycache {env.get('skycache_version', '?')} "
        f"(commit {str(env.get('git_commit', '?'))[:12]}).",
        f"- Shaping: {shaping.get('name', 'none')} {shaping.get('detail', '')}".rstrip() + ".",
        f"- {manifest.get('repetitions', '?')} repetitions per condition, conditions interleaved in a "
        f"shuffled order per round (seed {manifest.get('seed', '?')}); {manifest.get('started', '?')} "
        f"to {manifest.get('ended', '?')}.",
        *([f"- {line}."] if (line := auto_line(manifest)) else []),
        *_resumed_lines(manifest),
        "- Stacks:",
    ]
    for name, desc in manifest.get("stacks", {}).items():
        parts.append(f"  - `{name}`: {desc}")
    parts += [
        "",
        "## Results",
        "",
        "Geometric mean of the repetitions with 95% t intervals on log values; CV is the coefficient of "
        f"variation of the repetitions (unstable above {stats.UNSTABLE_CV * 100:.0f}%):",
        "",
        summary_table(summary),
        "",
        "Latency percentiles (us) of all the repetitions' I/Os together, from fio's latency histograms "
        "merged (clat = completion latency, lat = total latency; `from` says when a run has no "
        "histograms):",
        "",
        latency.markdown_table(latency.summary(df)),
        "",
        f"Ratios of geometric means to the baseline ({baseline or 'default'}) with Welch t 95% intervals "
        "on log values; the verdict uses the p-value Holm-adjusted over the comparisons of each metric "
        f'("not significant" at p >= 0.05), and is "unstable" when either side\'s CV exceeds '
        f"{stats.UNSTABLE_CV * 100:.0f}%:",
        "",
        comparison_table(comparisons),
        "",
        *_cache_section(df, comparisons),
        "### Findings",
        "",
        *(_findings(comparisons) or ["- (no comparisons)"]),
        "",
    ]
    if len(failed):
        parts += ["### Failed conditions", ""]
        for r in failed.itertuples():
            parts.append(f"- {r.label} rep {r.rep}: {r.error}")
        parts.append("")
    parts += ["## Plots", ""]
    if not plots:
        parts.append("(none drawn yet: `skycache bench plots RUN` draws them)")
    for p in plots:
        rel = p.relative_to(run_dir) if p.is_relative_to(run_dir) else p
        parts.append(f"![{p.stem}]({rel})")
    parts += [
        "",
        "## Reproduce",
        "",
        f"Raw fio JSON and the job files that ran are under `fio/` and `jobs/` ({n_ok} measured rows in "
        "`tidy.parquet`); `skycache.bench.load(run_dir)` loads the table.",
        "",
        "```",
        str(manifest.get("command", "")),
        "```",
        "",
    ]
    return "\n".join(parts)


# The figures of ``plots.plot_run``, in its order: report.md lists those it finds in RUN/plots/.
PLOT_NAMES = ("iops.png", "latency.png", "latency-percentiles.png", "cache.png")


def _check_writable(run_dir: Path) -> None:
    # plots/ and report.md are written at the end: a read-only run directory is refused before drawing
    files.check_output_dir(run_dir, what="run directory")
    if (run_dir / "plots").exists():
        files.check_output_dir(run_dir / "plots", what="plots directory")


def draw_plots(run_dir: Path, progress: Callable[[str], None] = quiet) -> list[Path]:
    """RUN/plots/*.png of a finished run (``bench plots RUN``); report.md is left as it is."""
    from skycache.bench import plots, store, tidy  # plots pulls in matplotlib: only when drawing

    _check_writable(run_dir)
    run = store.RunDir(run_dir)
    manifest = run.manifest()
    df = tidy.load(run_dir)
    # each sample tagged with its repetition: cache.png draws one line per repetition
    samples = [{"rep": rec.get("rep"), **s} for rec in run.latest_records() for s in rec.get("cache", [])]
    ok = df[df["status"] == "ok"] if "status" in df.columns else df
    if not len(ok):
        progress("drawing plots: none (no condition succeeded)")
        return []
    return plots.plot_run(df, manifest, run_dir / "plots", samples, progress)


def drawn_plots(run_dir: Path) -> list[Path]:
    """The plots already drawn in RUN/plots/, in plot_run's order (then any others by name)."""
    found = sorted((run_dir / "plots").glob("*.png")) if (run_dir / "plots").is_dir() else []
    rank = {name: i for i, name in enumerate(PLOT_NAMES)}
    return sorted(found, key=lambda p: (rank.get(p.name, len(rank)), p.name))


def write_report(
    run_dir: Path, baseline: str | None = None, progress: Callable[[str], None] = quiet
) -> tuple[list[compare.Comparison], Path]:
    """RUN/report.md from the tidy table, linking the plots RUN/plots/ holds (``bench report RUN``)."""
    from skycache.bench import store, tidy

    _check_writable(run_dir)
    manifest = store.RunDir(run_dir).manifest()
    if baseline is None:
        baseline = manifest.get("baseline")
    df = tidy.load(run_dir)  # a damaged run is one error line, before any progress line
    steps = Steps("writing report.md", 2, progress)
    steps.step("comparisons")
    try:
        comparisons = compare.compare(df, baseline)
    except InvalidInput:  # a run with no successes still gets a report saying so
        comparisons = []
    steps.step("report.md")
    text = render(manifest, df, comparisons, drawn_plots(run_dir), run_dir, baseline=baseline)
    out = run_dir / "report.md"
    out.write_text(text)
    steps.done()
    return comparisons, out


def finish(
    run_dir: Path, baseline: str | None = None, progress: Callable[[str], None] = quiet
) -> tuple[list[compare.Comparison], list[Path], Path]:
    """Plots, then comparisons and report.md, of a finished run directory (``bench run``'s end)."""
    _check_writable(run_dir)  # before a minute of drawing, not after it
    pngs = draw_plots(run_dir, progress)
    comparisons, out = write_report(run_dir, baseline, progress)
    return comparisons, pngs, out
