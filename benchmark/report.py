"""Tables and learning curves from a suite's runs, with the peers' published numbers beside ours.

Reads every finished run that benchmark/run.py left under `<runs-dir>/<suite>/` (its summary.json and
its tensorboard curve `charts/episodic_return`) and writes, under `<out>/<suite>/`:
- `runs.csv`: one row per run, the summary's numbers as they are;
- `results.md`: an overview of the evaluation returns, then a table per env, one row per script:
  mean ± std over seeds (numpy's std, ddof 0) of the final training return (last 20 episodes) and of
  the evaluation return, steps and seconds to the env's solve threshold (over the seeds that reached
  it), steps/s, and with 5 seeds or more the interquartile mean of the evaluation return with a 95%
  bootstrap confidence interval over seeds (with fewer, the IQM is the mean and a bootstrap interval
  says little); then the peers' numbers for that env from benchmark/peers.toml, each with its source;
- `curves.png`: one panel per env, one line per script: the mean over seeds of the running mean of
  the last 20 episode returns, against env steps, with a band of ± one std over seeds.

    python benchmark/report.py --suite classic
    python benchmark/report.py --speed benchmark/results/speed_suite   # speed.md from speed.py's results
"""

import csv
import glob
import json
import math
import os
import re
import sys
import tomllib
import warnings
from dataclasses import dataclass

import numpy as np
import tyro

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLUMNS = ("script", "env_id", "seed", "global_step", "final_return", "eval_return", "eval_return_std",
           "reward_threshold", "steps_to_threshold", "seconds_to_threshold", "sps", "wall_seconds")
SCRIPT_ORDER = ("reinforce", "reinforce_baseline", "a2c", "trpo", "ppo", "ppo_continuous")  # the ladder
CURVE_POINTS = 100  # points on each learning curve
RUNNING_MEAN = 20  # episodes, as in the summaries' final_return
BOOTSTRAP_SAMPLES = 2000
IQM_MIN_SEEDS = 5


@dataclass
class Args:
    suite: str = "classic"
    """the suite whose runs to report"""
    runs_dir: str = os.path.join(ROOT, "benchmark", "runs")
    """where benchmark/run.py left the runs"""
    out: str = os.path.join(ROOT, "benchmark", "results")
    """the report goes to <out>/<suite>/"""
    peers: str = os.path.join(ROOT, "benchmark", "peers.toml")
    """the peers' published numbers"""
    speed: str = ""
    """in place of a suite: a folder of benchmark/speed.py results, summarised into speed.md there"""


# ------------------------------------------------------------------------------------------ reading
def load_runs(runs_dir: str, suite: str) -> list[dict]:
    """One dict per finished run: the COLUMNS of its summary.json, plus the run folder."""
    runs = []
    pattern = os.path.join(glob.escape(os.path.join(runs_dir, suite)), "*", "*", "seed_*", "*", "summary.json")
    for path in sorted(glob.glob(pattern)):
        with open(path) as f:
            summary = json.load(f)
        if summary.get("interrupted") or summary.get("failed"):
            continue
        script = path.split(os.sep)[-5]
        runs.append({"script": script, **{key: summary.get(key) for key in COLUMNS[1:]},
                     "run_dir": os.path.dirname(path)})
    runs.sort(key=lambda r: (script_rank(r["script"]), r["env_id"], r["seed"]))
    return runs


def script_rank(script: str) -> tuple:
    return (SCRIPT_ORDER.index(script) if script in SCRIPT_ORDER else len(SCRIPT_ORDER), script)


def episode_returns(run_dir: str) -> tuple[np.ndarray, np.ndarray]:
    """(env step, return) of every training episode the run logged to tensorboard."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    accumulator = EventAccumulator(run_dir, size_guidance={"scalars": 0})
    accumulator.Reload()
    events = accumulator.Scalars("charts/episodic_return")
    return np.array([e.step for e in events], dtype=np.float64), np.array([e.value for e in events])


def learning_curve(steps: np.ndarray, returns: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """At each grid step, the mean of the last RUNNING_MEAN episodes finished by then (NaN before the first)."""
    order = np.argsort(steps, kind="stable")
    steps, returns = steps[order], returns[order]
    cumulative = np.concatenate([[0.0], np.cumsum(returns)])
    finished = np.searchsorted(steps, grid, side="right")  # episodes finished at or before each grid step
    first = np.maximum(finished - RUNNING_MEAN, 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(finished > 0, (cumulative[finished] - cumulative[first]) / (finished - first), np.nan)


# -------------------------------------------------------------------------------------- statistics
def interquartile_mean(values: np.ndarray) -> float:
    """Mean of the middle half: drop the lowest and highest quarter (floor(n/4) values each side)."""
    values = np.sort(values)
    cut = len(values) // 4
    return float(values[cut:len(values) - cut].mean())


def bootstrap_interval(values: np.ndarray, statistic, confidence: float = 0.95, seed: int = 0) -> tuple:
    """Percentile bootstrap over seeds: resample the seeds with replacement, recompute the statistic."""
    rng = np.random.default_rng(seed)
    samples = rng.choice(values, size=(BOOTSTRAP_SAMPLES, len(values)), replace=True)
    estimates = np.array([statistic(sample) for sample in samples])
    tail = (1 - confidence) / 2 * 100
    return float(np.percentile(estimates, tail)), float(np.percentile(estimates, 100 - tail))


def number(value: float) -> str:
    """Thousands separators; one decimal below 1,000 in size."""
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:,.1f}"


def mean_std(values: list) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    return f"{number(float(np.mean(values)))} ± {number(float(np.std(values)))}"


def reached(values: list, threshold, unit: str = "") -> str:
    """Mean ± std over the seeds that reached the threshold (the value itself if one did), and how many did."""
    hits = [v for v in values if v is not None]
    if threshold is None:
        return "no threshold"
    if not hits:
        return f"not reached (0/{len(values)})"
    value = number(hits[0]) if len(hits) == 1 else mean_std(hits)
    return f"{value}{unit} ({len(hits)}/{len(values)})"


# ----------------------------------------------------------------------------------------- writing
def write_csv(runs: list[dict], path: str) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(runs)


def env_family(env_id: str) -> str:
    """HalfCheetah-v5 -> HalfCheetah: peers used other versions of the same envs."""
    return re.sub(r"-v\d+$", "", env_id.split(":")[-1])


def env_table(env_id: str, runs: list[dict], peers: list[dict]) -> list[str]:
    budget = max(r["global_step"] for r in runs)
    threshold = runs[0]["reward_threshold"]
    lines = [f"### {env_id}", "",
             f"{budget:,} env steps; solve threshold {'none in the spec' if threshold is None else number(threshold)}.",
             "", "| script | seeds | final training return | evaluation return | steps to threshold | "
             "seconds to threshold | steps/s | IQM evaluation [95% CI] |", "|---|---|---|---|---|---|---|---|"]
    for script in sorted({r["script"] for r in runs}, key=script_rank):
        rows = [r for r in runs if r["script"] == script]
        evals = np.array([r["eval_return"] for r in rows], dtype=np.float64)
        iqm = f"needs {IQM_MIN_SEEDS} seeds"
        if len(evals) >= IQM_MIN_SEEDS:
            low, high = bootstrap_interval(evals, interquartile_mean)
            iqm = f"{number(interquartile_mean(evals))} [{number(low)}, {number(high)}]"
        lines.append(f"| {script}.py | {len(rows)} | {mean_std([r['final_return'] for r in rows])} | "
                     f"{mean_std(list(evals))} | {reached([r['steps_to_threshold'] for r in rows], threshold)} | "
                     f"{reached([r['seconds_to_threshold'] for r in rows], threshold, ' s')} | "
                     f"{mean_std([r['sps'] for r in rows])} | {iqm} |")
    mine = [p for p in peers if env_family(p["env"]) == env_family(env_id)]
    if mine:
        lines += ["", "Published by peers:", "", "| peer | env | return | what | steps | seeds | source |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {p['who']} | {p['env']} | {p['result']} | {p['what']} | {p['budget']:,} | {p['seeds']} | "
                  f"{p['source']} |" for p in mine]
    return lines + [""]


def overview(runs: list[dict], env_ids: list[str]) -> list[str]:
    """One table of the evaluation returns: a row per script, a column per env."""
    scripts = sorted({r["script"] for r in runs}, key=script_rank)
    lines = ["## Evaluation return, mean ± std over seeds", "",
             "| script | " + " | ".join(env_ids) + " |", "|---" * (len(env_ids) + 1) + "|"]
    for script in scripts:
        cells = [mean_std([r["eval_return"] for r in runs if r["script"] == script and r["env_id"] == env_id])
                 for env_id in env_ids]
        lines.append(f"| {script}.py | " + " | ".join(cells) + " |")
    return lines + ["", "## Each env", ""]


def write_markdown(runs: list[dict], peers: list[dict], suite: str, path: str) -> None:
    lines = [f"# Suite {suite}", "",
             "Made by `python benchmark/report.py --suite " + suite + "` from the runs of "
             "`python benchmark/run.py --suite " + suite + "`. Returns are mean ± std over seeds; the final "
             "training return is the mean of the last 20 episodes (with exploration), the evaluation return the "
             "mean over the run's evaluation episodes (greedy or mean action). Steps and seconds to threshold: "
             "first step at which the last-20 mean reached the env's threshold, over the seeds that did. Seconds and "
             "steps/s are as the runs measured them, sharing the machine with the other jobs of the suite: "
             "benchmark/speed.py measures speed one run at a time.", ""]
    env_ids = sorted({r["env_id"] for r in runs})
    lines += overview(runs, env_ids)
    for env_id in env_ids:
        lines += env_table(env_id, [r for r in runs if r["env_id"] == env_id], peers)
    with open(path, "w") as f:
        f.write("\n".join(lines))


def plot_curves(runs: list[dict], suite: str, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")  # files only, no screen
    import matplotlib.pyplot as plt

    env_ids = sorted({r["env_id"] for r in runs})  # as in the tables
    columns = min(3, len(env_ids))
    rows = math.ceil(len(env_ids) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(5 * columns, 3.6 * rows), squeeze=False)
    scripts = sorted({r["script"] for r in runs}, key=script_rank)
    colours = {script: plt.get_cmap("tab10")(i) for i, script in enumerate(scripts)}
    for axis, env_id in zip(axes.flat, env_ids):
        env_runs = [r for r in runs if r["env_id"] == env_id]
        grid = np.linspace(0, max(r["global_step"] for r in env_runs), CURVE_POINTS + 1)[1:]
        for script in scripts:
            curves = np.array([learning_curve(*episode_returns(r["run_dir"]), grid)
                               for r in env_runs if r["script"] == script])
            if len(curves) == 0:
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns, before any episode ended
                mean, std = np.nanmean(curves, axis=0), np.nanstd(curves, axis=0)
            axis.plot(grid, mean, color=colours[script], label=f"{script}.py ({len(curves)})")
            axis.fill_between(grid, mean - std, mean + std, color=colours[script], alpha=0.2, linewidth=0)
        axis.set_title(env_id)
        axis.xaxis.set_major_formatter(lambda x, _: f"{x / 1e6:g}M" if x >= 1e6 else f"{x / 1e3:g}k" if x else "0")
        axis.set_xlabel("env steps")
        axis.set_ylabel("return (last 20 episodes)")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    for axis in list(axes.flat)[len(env_ids):]:
        axis.set_visible(False)
    figure.suptitle(f"{suite}: mean over seeds (their number in brackets) ± one std", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def median_of(runs: list[dict], key: str):
    values = [r[key] for r in runs if r.get(key) is not None]
    return float(np.median(values)) if values else None


def speed_cell(runs: list[dict], key: str, decimals: int = 0) -> str:
    """Median (min – max), and how many seeds had a value if not all."""
    values = [r[key] for r in runs if r.get(key) is not None]
    if not values:
        return "not reached"
    cell = f"{np.median(values):,.{decimals}f} ({min(values):,.{decimals}f} – {max(values):,.{decimals}f})"
    return cell + (f", {len(values)}/{len(runs)} seeds" if len(values) < len(runs) else "")


def ratio(ours, peer) -> str:
    """How many times better ours is, for a number where less is better (steps, seconds, memory)."""
    if ours is None or peer is None:
        return {(True, False): "SB3 alone reached it", (False, True): "ours alone reached it"}.get(
            (ours is None, peer is None), "–")
    return f"**{peer / ours:.2f}x**" if peer >= ours else f"{peer / ours:.2f}x"


def write_speed_table(folder: str) -> str:
    """speed.md: per script and env, our medians against SB3's, and how many times better ours is."""
    lines = ["| script | env | run | steps to threshold | seconds to threshold | steps/s | peak memory (MiB) |",
             "|---|---|---|---|---|---|---|"]
    results = []
    for path in glob.glob(os.path.join(glob.escape(folder), "*.json")):
        with open(path) as f:
            results.append(json.load(f))
    results.sort(key=lambda r: (r["env_id"], script_rank(os.path.splitext(r["script"])[0])))
    for result in results:
        groups = [("ours", result["runs"])] + ([(result["peer"], result["peer_runs"])] if "peer_runs" in result else [])
        for name, runs in groups:
            lines.append(f"| {result['script']} | {result['env_id']} | {name}, {len(runs)} seeds | "
                         f"{speed_cell(runs, 'steps_to_threshold')} | {speed_cell(runs, 'seconds_to_threshold', 1)} | "
                         f"{speed_cell(runs, 'sps')} | {speed_cell(runs, 'peak_rss_mib')} |")
        if "peer_runs" in result:
            ours, peer = result["runs"], result["peer_runs"]
            lines.append(f"| | | ours better by | {ratio(median_of(ours, 'steps_to_threshold'), median_of(peer, 'steps_to_threshold'))} | "
                         f"{ratio(median_of(ours, 'seconds_to_threshold'), median_of(peer, 'seconds_to_threshold'))} | "
                         f"{ratio(1 / median_of(ours, 'sps'), 1 / median_of(peer, 'sps'))} | "  # time per step
                         f"{ratio(median_of(ours, 'peak_rss_mib'), median_of(peer, 'peak_rss_mib'))} |")
    out = os.path.join(folder, "speed.md")
    with open(out, "w") as f:
        f.write("Median (min – max) over seeds, one run at a time; a ratio is SB3's median over ours (steps/s: ours over SB3's), "
                "so above 1 means ours is better; steps and seconds to threshold are over the seeds that reached it. Made by `python benchmark/report.py --speed "
                f"{os.path.relpath(os.path.abspath(folder), ROOT)}`.\n\n" + "\n".join(lines) + "\n")
    return out


def main(args: Args) -> int:
    if args.speed:
        print(f"wrote {write_speed_table(args.speed)}")
        return 0
    runs = load_runs(args.runs_dir, args.suite)
    if not runs:
        print(f"report.py: error: no finished runs under {os.path.join(args.runs_dir, args.suite)}; "
              f"run python benchmark/run.py --suite {args.suite} first", file=sys.stderr)
        return 2
    with open(args.peers, "rb") as f:
        peers = tomllib.load(f)["peer"]
    out = os.path.join(args.out, args.suite)
    os.makedirs(out, exist_ok=True)
    write_csv(runs, os.path.join(out, "runs.csv"))
    write_markdown(runs, peers, args.suite, os.path.join(out, "results.md"))
    plot_curves(runs, args.suite, os.path.join(out, "curves.png"))
    print(f"{len(runs)} runs: wrote runs.csv, results.md and curves.png to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(tyro.cli(Args, description=__doc__.split("\n\n")[0])))
