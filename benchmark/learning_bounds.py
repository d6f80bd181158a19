"""What every learning test reaches over many seeds: the evidence for its budget and bound.

A test that asserts what training reached (a return, steps to a threshold, a variance ratio, a KL)
must hold on any CPU, where the same seed follows another trajectory. So each such test (marked
`learning` in tests/) is rerun here over a range of seeds, on this machine, and its bound is chosen
with a margin below the worst seed (../shared/CONVENTIONS.md, "Determinism and learning tests").

Runs `pytest -m learning` with LEARNING_SEEDS set, which makes every learning test train once per
seed of the range instead of with its own seeds, and LEARNING_RECORD set, where each run appends
what it reached before the test asserts anything (tests/conftest.py). Then writes a table: per test
and measure, the number of seeds, min, median and max, and every value seed by seed.

    python benchmark/learning_bounds.py --seeds 1-20                       # about 30 minutes on 2 cores
    python benchmark/learning_bounds.py --seeds 1-20 --select pendulum     # one test (pytest -k)
    python benchmark/learning_bounds.py --report-only                      # the table from what is recorded

A rerun appends to the record; the table takes the last value of each (test, seed).
"""

import json
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
from dataclasses import dataclass
from typing import Optional

import tyro

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass
class Args:
    seeds: str = "1-20"
    """range of seeds, first-last, each learning test trains once per seed"""
    select: Optional[str] = None
    """pytest -k expression to sweep only some learning tests"""
    jobs: int = os.cpu_count() or 1
    """pytest workers (pytest-xdist); results do not depend on it, only the time taken"""
    out: str = "benchmark/results/learning_bounds"
    """folder for the record (JSON lines) and the table (markdown), one of each per CPU model"""
    report_only: bool = False
    """write the table from the record without running anything"""


def cpu_model() -> str:
    """The CPU's model name as lscpu and /proc/cpuinfo give it, e.g. 'AMD EPYC' or 'Intel(R) Xeon(R) ...'."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def run(args: Args, record: str) -> int:
    env = dict(os.environ, LEARNING_SEEDS=args.seeds, LEARNING_RECORD=record)
    command = [sys.executable, "-m", "pytest", "-m", "learning", "-n", str(args.jobs), "-q", "-p", "no:cacheprovider",
               "tests"] + (["-k", args.select] if args.select else [])
    print(f"$ LEARNING_SEEDS={args.seeds} LEARNING_RECORD={record} {shlex.join(command)}", flush=True)
    return subprocess.call(command, cwd=ROOT, env=env)


def table(record: str, cpu: str) -> str:
    """Markdown: one row per test, parameters and measure, over the seeds recorded (the last value of each)."""
    runs: dict[tuple, dict[int, dict]] = {}
    with open(record) as f:
        for line in f:
            entry = json.loads(line)
            params = ", ".join(f"{k}={v}" for k, v in sorted(entry.pop("params").items()))
            runs.setdefault((entry.pop("test"), params), {})[entry.pop("seed")] = entry
    lines = [f"# What the learning tests reach, seed by seed, on {cpu}", "",
             f"Made with `python benchmark/learning_bounds.py`; raw values in `{os.path.basename(record)}`. "
             "min, median and max are over the seeds with a value; `none` counts the others (a threshold never "
             "reached).", "",
             "| test | params | measure | seeds | none | min | median | max | by seed |",
             "|---|---|---|---|---|---|---|---|---|"]
    for (test, params), by_seed in sorted(runs.items()):
        seeds = sorted(by_seed)
        for measure in by_seed[seeds[0]]:
            values = [by_seed[s].get(measure) for s in seeds]
            known = sorted(v for v in values if v is not None)
            low, median, high = (fmt(known[0]), fmt(statistics.median(known)), fmt(known[-1])) if known else ("",) * 3
            listed = " ".join(f"{s}:{fmt(v)}" for s, v in zip(seeds, values))
            lines.append(f"| {test} | {params} | {measure} | {len(seeds)} | {len(values) - len(known)} | {low} "
                         f"| {median} | {high} | {listed} |")
    return "\n".join(lines) + "\n"


def fmt(value) -> str:
    if value is None or isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and not value.is_integer():
        return f"{value:.4g}"
    return str(int(value)) if isinstance(value, float) else str(value)


def main(args: Args) -> int:
    cpu = cpu_model()
    os.makedirs(os.path.join(ROOT, args.out), exist_ok=True)
    record = os.path.join(ROOT, args.out, slug(cpu) + ".jsonl")
    status = 0 if args.report_only else run(args, record)
    if not os.path.exists(record):
        print(f"learning_bounds.py: error: nothing recorded in {record}", file=sys.stderr)
        return 2
    report = os.path.join(ROOT, args.out, slug(cpu) + ".md")
    with open(report, "w") as f:
        f.write(table(record, cpu))
    print(f"table: {os.path.relpath(report, ROOT)}; pytest exit status {status} (a seed below a bound fails its test)")
    return 0


if __name__ == "__main__":
    sys.exit(main(tyro.cli(Args)))
