"""Helpers shared by the benchmarks: timing, machine/version description, RESULTS.md rows.

Every ``benchmarks/bench_*.py`` script prints its table with ``markdown_table`` and appends one row
per figure to ``benchmarks/RESULTS.md`` with ``append_results``. Timings are medians of repeated
calls after warm-up (``time_calls``); when two implementations are compared, ``time_interleaved``
alternates them call by call so that both see the same machine load and the ratio is of one run.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "RESULTS.md")
# Imports of the benchmarked code work from a checkout without ``pip install -e``.
sys.path.insert(0, os.path.dirname(HERE))

VERSIONED = ("tensorflow", "keras", "keras-hub", "tensorflow-text", "torch", "transformers",
             "open-clip-torch", "timm")
RESULTS_HEADER = """# Benchmark results

Rows are appended by the `benchmarks/bench_*.py` scripts (see benchmarks/README.md). Times are
medians of repeated runs after warm-up; a ratio compares two figures measured in the same run
(interleaved call by call for training and inference, one after the other for the input
pipeline). The shared 2-core machine these were taken on also ran other people's work:
`load` is the 1-minute load average when the run started → when it ended, and the CPU other
processes used during it (cores, from /proc/stat). Rows are marked "(loaded)" when the start load
was above 2 or the others used more than 0.5 cores: such rows are not headline figures (PyTorch
degrades more than TF under oversubscription, so even the ratios move). Before 2026-12-01 the
column was the 1 / 5-minute load at the end of the run, marked above 2.

| date (UTC) | commit | benchmark | figure | ours | reference | ratio | setup | load | machine | versions |
| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |
"""


def time_calls(fn, repeats: int, warmup: int = 1) -> dict:
    """Seconds of ``fn()``: ``first`` (the first warm-up call), then median / p90 / min of
    ``repeats`` further calls."""
    first = None
    for _ in range(warmup):
        start = time.perf_counter()
        fn()
        first = first if first is not None else time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return summarize(times, first)


def summarize(times, first=None) -> dict:
    times = sorted(times)
    return {"median": statistics.median(times), "p90": times[min(len(times) - 1,
                                                                   int(0.9 * len(times)))],
            "min": times[0], "n": len(times), "first": first}


def time_interleaved(fns: dict, repeats: int, warmup: int = 1, pause: float = 0.2) -> dict:
    """Like ``time_calls`` for several functions, alternating them call by call (A B A B ...)
    after ``warmup`` calls of each; returns name → summary.

    ``pause`` seconds of sleep precede each timed call, so that the previous framework's worker
    threads (which spin for a while after their work, e.g. OpenMP's blocktime) are idle again.
    """
    first = {}
    for name, fn in fns.items():
        for i in range(warmup):
            start = time.perf_counter()
            fn()
            if i == 0:
                first[name] = time.perf_counter() - start
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            time.sleep(pause)
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: summarize(t, first.get(name)) for name, t in times.items()}


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> str:
    """CPU model, usable cores and memory, in one short string."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem = float("nan")
    return f"{cpu_model()}, {cores} cores, {mem:.0f} GiB"


def versions(names=VERSIONED) -> str:
    """Installed versions of the packages the benchmarks touch (absent ones are left out)."""
    found = []
    for name in names:
        try:
            found.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    return f"Python {platform.python_version()}, " + ", ".join(found)


# Headline ratios come only from runs on a quiet machine (benchmarks/README.md): a 1-minute load
# at most this when the benchmark starts. Its own threads load the machine too (a 2-thread run
# alone reads 2–3 at its end), so the mark also needs other processes to have used at most
# QUIET_OTHERS_CPU cores on average during the run (from /proc/stat, minus our own CPU time).
QUIET_LOAD = 2.0
QUIET_OTHERS_CPU = 0.5


def _cpu_seconds() -> tuple:
    """``(all processes' busy CPU seconds, ours and our finished children's)`` so far."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(v) for v in f.readline().split()[1:9]]
        busy = (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # minus idle, iowait
    except (OSError, ValueError):
        busy = float("nan")
    t = os.times()
    return busy, t.user + t.system + t.children_user + t.children_system


_START = (os.getloadavg()[0], time.monotonic(), *_cpu_seconds())


def others_cpu() -> float:
    """Cores other processes kept busy on average since this module was imported."""
    load0, wall0, busy0, own0 = _START
    busy, own = _cpu_seconds()
    return max(0.0, ((busy - busy0) - (own - own0)) / max(time.monotonic() - wall0, 1e-9))


def load() -> str:
    """The 1-minute load when the run started and now, and other processes' CPU use during it;
    marked ``loaded`` when the start load was above ``QUIET_LOAD`` or the others used more than
    ``QUIET_OTHERS_CPU`` cores."""
    start, now, others = _START[0], os.getloadavg()[0], others_cpu()
    loaded = start > QUIET_LOAD or not others <= QUIET_OTHERS_CPU
    return (f"{start:.1f} → {now:.1f}, others {others:.2f} cores"
            + (" (loaded)" if loaded else ""))


def commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, text=True,
                             capture_output=True, timeout=10)
        return out.stdout.strip() or "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


def markdown_table(headers, rows) -> str:
    """A GitHub-markdown table of ``rows`` (sequences of cells, formatted with ``str``)."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    def line(values):
        return "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths)) + " |"
    return "\n".join([line([str(h) for h in headers]), line(["-" * w for w in widths])]
                     + [line(r) for r in cells])


def append_results(benchmark: str, rows, setup: str, path: str = RESULTS) -> None:
    """Appends one RESULTS.md row per ``(figure, ours, reference, ratio)`` tuple of ``rows``, with
    the date, commit, machine, load and package versions; writes the header on first use."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")
    common = dict(date=stamp, commit=commit(), load=load(), machine=machine(), versions=versions())
    new = not os.path.exists(path)
    with open(path, "a", encoding="utf-8") as f:
        if new:
            f.write(RESULTS_HEADER)
        for figure, ours, reference, ratio in rows:
            cells = [common["date"], common["commit"], benchmark, figure, ours, reference, ratio,
                     setup, common["load"], common["machine"], common["versions"]]
            f.write("| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |\n")
    print(f"\nappended {len(rows)} row(s) to {os.path.relpath(path)} (load {common['load']})")


def record(benchmark: str, rows, setup: str, append: bool = True, output: str | None = None,
           data=None) -> None:
    """The end of every benchmark: ``append_results`` unless ``append`` is false (``--no_append``),
    and ``data`` as JSON to ``output`` when given (``--output``)."""
    if append:
        append_results(benchmark, rows, setup)
    if output:
        with open(output, "w") as f:
            json.dump(data, f, indent=2, default=str)


def fmt_ratio(ours: float, reference: float) -> str:
    """``ours / reference`` as ``1.23×``."""
    return f"{ours / reference:.2f}×" if reference else "n/a"
