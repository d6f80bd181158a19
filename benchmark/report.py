"""Tables and learning curves from a suite's runs, with the peers' published numbers beside ours.

Reads every finished run that benchmark/run.py left under `<runs-dir>/<suite>/` (its summary.json and
its tensorboard curve `charts/episodic_return`) and writes, under `<out>/<suite>/`:
- `runs.csv`: one row per run, the summary's numbers as they are;
- `results.md`: an overview of the evaluation returns, then a table per env, one row per script:
  mean ± std over seeds (numpy's std, ddof 0) of the final training return (last 20 episodes) and of
  the evaluation return, steps and seconds to the env's solve threshold (over the seeds that reached
  it), steps/s, and with 5 seeds or more the interquartile mean of the evaluation return with a 95%
  bootstrap confidence interval over seeds, by rliable (with fewer, too few to trim and resample);
  then the peers' numbers for that env from benchmark/peers.toml, each with its source;
- `curves.png`: one panel per env, one line per script: the mean over seeds of the running mean of
  the last 20 episode returns, against env steps, with a band of ± one std over seeds.

A table `[<suite>."<script>@<variant>"."<env id>"]` of the config is one setting of a script; it reports
as a script of its own. With `--normalise`, runs are also scored as the PPO paper's Table 1 scores
them (Schulman et al. 2017: the mean return of a run's last 100 episodes, normalised per task so that
a random policy scores 0 and the best setting's mean 1), and aggregated with rliable (Agarwal et al.
2021: mean and interquartile mean with stratified-bootstrap confidence intervals, probability of
improvement): `records/` (a JSON record per run, kept across sessions: the report covers every run
recorded there), `scores.csv`, `normalised.md`, `normalised.png` and `improvement.png`.

    python benchmark/report.py --suite classic
    python benchmark/report.py --suite table1 --normalise
    python benchmark/report.py --suite offpolicy --thresholds Pendulum-v1=-200   # an env without a threshold
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
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import tyro
from rliable import library as rly
from rliable import metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLUMNS = ("script", "env_id", "seed", "global_step", "final_return", "eval_return", "eval_return_std",
           "reward_threshold", "steps_to_threshold", "seconds_to_threshold", "sps", "wall_seconds")
SCRIPT_ORDER = ("reinforce", "reinforce_baseline", "a2c", "a3c", "trpo", "ppo", "ppo_continuous", "ddpg")  # the ladder
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
    normalise: bool = False
    """also score each run as the PPO paper's Table 1 does, normalised per task against a random policy
    and the best setting, and aggregate with rliable (normalised.md, normalised.png, improvement.png)"""
    records: bool = False
    """keep a record of each run (its numbers and learning curve) in <out>/<suite>/records/ and report every
    record there, earlier sessions' included: committed, they are the suite's raw results (--normalise keeps
    them always)"""
    random_scores: str = os.path.join(ROOT, "benchmark", "results", "random_scores", "random_scores.json")
    """a random policy's scores per env, from benchmark/random_scores.py (with --normalise)"""
    thresholds: list[str] = field(default_factory=list)
    """ENV=VALUE (e.g. Pendulum-v1=-200): a threshold for an env whose spec has none, or in place of its
    spec's; the steps to it are read from each run's episodes (the first episode end at which the mean of
    the last 20 reaches it), the seconds are then not known"""


class UsageError(Exception):
    """Reported in one line, exit status 2."""


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
                     "run_dir": os.path.dirname(path), "args": summary.get("args")})
    runs.sort(key=lambda r: (script_rank(r["script"]), r["env_id"], r["seed"]))
    return runs


def parse_thresholds(pairs: list[str]) -> dict:
    """["Pendulum-v1=-200"] -> {"Pendulum-v1": -200.0}."""
    thresholds = {}
    for pair in pairs:
        env_id, _, value = pair.rpartition("=")
        try:
            thresholds[env_id] = float(value)
        except ValueError:
            env_id = ""
        if not env_id:
            raise UsageError(f"--thresholds takes ENV=VALUE pairs (Pendulum-v1=-200), got {pair!r}")
    return thresholds


def steps_to(steps: np.ndarray, returns: np.ndarray, threshold: float) -> Optional[int]:
    """The env step of the first episode end at which the mean of the last RUNNING_MEAN episodes
    (RUNNING_MEAN of them finished) reaches the threshold, as the scripts check their own; None if never."""
    order = np.argsort(steps, kind="stable")
    steps, returns = steps[order], returns[order]
    if len(returns) < RUNNING_MEAN:
        return None
    means = np.convolve(returns, np.ones(RUNNING_MEAN) / RUNNING_MEAN, mode="valid")  # episodes i-19 .. i
    hits = np.flatnonzero(means >= threshold)
    return int(steps[hits[0] + RUNNING_MEAN - 1]) if len(hits) else None


def apply_thresholds(runs: list[dict], thresholds: dict) -> None:
    """Each run of an env given a threshold gets it, and its steps to it from its episodes."""
    for r in runs:
        if r["env_id"] in thresholds:
            r["reward_threshold"] = thresholds[r["env_id"]]
            r["steps_to_threshold"] = steps_to(*episode_returns(r["run_dir"]), r["reward_threshold"])
            r["seconds_to_threshold"] = None
            r["threshold_from_episodes"] = True


def script_rank(label: str) -> tuple:
    """The ladder's order; a script's variants ("<script>@<variant>") after it, by name."""
    script = label.split("@")[0]
    return (SCRIPT_ORDER.index(script) if script in SCRIPT_ORDER else len(SCRIPT_ORDER), label)


def shown(label: str) -> str:
    """ppo -> ppo.py; ppo_continuous@clip -> ppo_continuous.py: clip; trpo@sb3 -> SB3 as trpo.py."""
    if label.endswith("@sb3"):
        return f"SB3 as {shown(label[:-len('@sb3')])}"
    script, _, variant = label.partition("@")
    return f"{script}.py: {variant}" if variant else f"{script}.py"


def episode_returns(run_dir: str) -> tuple[np.ndarray, np.ndarray]:
    """(env step, return) of every training episode the run logged to tensorboard."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    accumulator = EventAccumulator(run_dir, size_guidance={"scalars": 0})
    accumulator.Reload()
    if "charts/episodic_return" not in accumulator.Tags()["scalars"]:  # no episode ended
        return np.zeros(0), np.zeros(0)
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
def bootstrap(score_dict: dict, statistic) -> tuple[dict, dict]:
    """rliable's interval estimates with BOOTSTRAP_SAMPLES resamples from a fixed seed. rliable's
    StratifiedBootstrap draws its indices from numpy's global generator whatever random_state says,
    so that generator is seeded for the call, and put back as it was after."""
    state = np.random.get_state()
    np.random.seed(0)
    try:
        with warnings.catch_warnings():  # arch would rather have a Generator than rliable's RandomState
            warnings.simplefilter("ignore", FutureWarning)
            return rly.get_interval_estimates(score_dict, statistic, reps=BOOTSTRAP_SAMPLES,
                                              random_state=np.random.RandomState(0))
    finally:
        np.random.set_state(state)


def interval(scores: np.ndarray, statistic) -> tuple[float, float, float]:
    """statistic(scores) and its 95% percentile-bootstrap confidence interval, by rliable (Agarwal et al.
    2021). scores is runs x tasks; each resample draws runs with replacement within each task (the
    stratified bootstrap), so every task keeps its number of runs. Seeded: the same scores, the same interval."""
    point, intervals = bootstrap({"": scores}, lambda sample: np.array([statistic(sample)]))
    return float(point[""][0]), float(intervals[""][0, 0]), float(intervals[""][1, 0])


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
             f"{budget:,} env steps; solve threshold {'none in the spec' if threshold is None else number(threshold)}"
             f"{' (given by --thresholds; the steps to it read from the episodes)' if runs[0].get('threshold_from_episodes') else ''}.",
             "", "| script | seeds | final training return | evaluation return | steps to threshold | "
             "seconds to threshold | steps/s | IQM evaluation [95% CI] |", "|---|---|---|---|---|---|---|---|"]
    for script in sorted({r["script"] for r in runs}, key=script_rank):
        rows = [r for r in runs if r["script"] == script]
        evals = np.array([r["eval_return"] for r in rows], dtype=np.float64)
        iqm = f"needs {IQM_MIN_SEEDS} seeds"
        if len(evals) >= IQM_MIN_SEEDS:
            iqm = "{} [{}, {}]".format(*map(number, interval(evals[:, None], metrics.aggregate_iqm)))
        lines.append(f"| {shown(script)} | {len(rows)} | {mean_std([r['final_return'] for r in rows])} | "
                     f"{mean_std(list(evals))} | {reached([r['steps_to_threshold'] for r in rows], threshold)} | "
                     f"{'not known' if rows[0].get('threshold_from_episodes') else reached([r['seconds_to_threshold'] for r in rows], threshold, ' s')} | "
                     f"{mean_std([r['sps'] for r in rows])} | {iqm} |")
    scripts = {r["script"].split("@")[0] for r in runs}  # ddpg@td3 is ddpg.py's
    mine = [p for p in peers if env_family(p["env"]) == env_family(env_id) and p["algorithm"] in scripts]
    if mine:
        lines += ["", "Published by peers:", "", "| peer | env | return | what | steps | seeds | source |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {p['who']} | {p['env']} | {p['result']} | {p['what']} | {p['budget']:,} | {p['seeds']} | "
                  f"{p['source']} |" for p in mine]
    return lines + [""]


def versus_sb3(runs: list[dict]) -> list[str]:
    """Ours against SB3 at the same settings (run.py --versus-sb3), per script and env, and each variant of
    the script run on that env (an ablation) against the same SB3 runs: medians over seeds,
    the two-sided Mann-Whitney U test on the final training returns, and rliable's probability that a
    run of ours outscores one of SB3's, with its 95% bootstrap interval."""
    from scipy.stats import mannwhitneyu
    lines = []
    pairs = []  # (ours, SB3's label, env): the table itself, then its ablations (variants without SB3 runs)
    for label, env_id in sorted({(r["script"], r["env_id"]) for r in runs if r["script"].endswith("@sb3")},
                                key=lambda pair: (script_rank(pair[0][:-len("@sb3")]), pair[1])):
        script = label[:-len("@sb3")]
        labels = {r["script"] for r in runs if r["env_id"] == env_id}
        variants = sorted(v for v in labels if v.startswith(script + "@") and not v.endswith("@sb3")
                          and f"{v}@sb3" not in labels)  # a setting with SB3 runs of its own has its own row
        pairs += [(mine, label, env_id) for mine in [script, *variants]]
    for mine, label, env_id in pairs:
        ours = [r for r in runs if r["script"] == mine and r["env_id"] == env_id and r["final_return"] is not None]
        theirs = [r for r in runs if r["script"] == label and r["env_id"] == env_id and r["final_return"] is not None]
        if not ours or not theirs:
            continue
        final_ours = np.array([r["final_return"] for r in ours], dtype=np.float64)
        final_theirs = np.array([r["final_return"] for r in theirs], dtype=np.float64)
        p_value = mannwhitneyu(final_ours, final_theirs, alternative="two-sided").pvalue
        improvement, intervals = bootstrap({"": (final_ours[:, None], final_theirs[:, None])},
                                           metrics.probability_of_improvement)
        low, high = np.ravel(intervals[""])
        median = lambda rows, key: number(float(np.median([r[key] for r in rows if r[key] is not None])))
        lines.append(f"| {shown(mine)} | {env_id} | {len(ours)} / {len(theirs)} | {median(ours, 'final_return')} | "
                     f"{median(theirs, 'final_return')} | {median(ours, 'eval_return')} | "
                     f"{median(theirs, 'eval_return')} | {float(improvement['']):.2f} [{low:.2f}, {high:.2f}] | "
                     f"{p_value:.3f} |")
    if not lines:
        return []
    return ["## Ours against Stable-Baselines3 at the same settings", "",
            "benchmark/run.py --versus-sb3 (benchmark/sb3_train.py: SB3's PPO, A2C, DDPG or TD3, sb3-contrib's TRPO). Medians over "
            "seeds; P(ours > SB3): the chance that a run of ours ends with the higher final training return, with its "
            "95% bootstrap interval (rliable); p: the two-sided Mann-Whitney U test on the final training returns "
            "(with 3 seeds a side it cannot go below 0.10, with 5 below 0.008; runs without a finished episode are "
            "left out). One test per row, uncorrected for the number of rows.", "",
            "| script | env | seeds (ours / SB3) | final training return, ours | SB3 | evaluation return, ours | SB3 | "
            "P(ours > SB3) [95% CI] | p |", "|---|---|---|---|---|---|---|---|---|", *lines, ""]


def overview(runs: list[dict], env_ids: list[str]) -> list[str]:
    """One table of the evaluation returns: a row per script, a column per env."""
    scripts = sorted({r["script"] for r in runs}, key=script_rank)
    lines = ["## Evaluation return, mean ± std over seeds", "",
             "| script | " + " | ".join(env_ids) + " |", "|---" * (len(env_ids) + 1) + "|"]
    for script in scripts:
        cells = [mean_std([r["eval_return"] for r in runs if r["script"] == script and r["env_id"] == env_id])
                 for env_id in env_ids]
        lines.append(f"| {shown(script)} | " + " | ".join(cells) + " |")
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
    lines += versus_sb3(runs) + overview(runs, env_ids)
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
            curves = np.array([np.interp(grid, r["curve_steps"], r["curve"]) if "curve" in r  # a record
                               else learning_curve(*episode_returns(r["run_dir"]), grid)
                               for r in env_runs if r["script"] == script
                               and ("run_dir" in r or r.get("curve") is not None)])  # a record may have lost it
            if len(curves) == 0:
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns, before any episode ended
                mean, std = np.nanmean(curves, axis=0), np.nanstd(curves, axis=0)
            axis.plot(grid, mean, color=colours[script], label=f"{shown(script)} ({len(curves)})")
            axis.fill_between(grid, mean - std, mean + std, color=colours[script], alpha=0.2, linewidth=0)
        axis.set_title(env_id)
        axis.xaxis.set_major_formatter(lambda x, _: f"{x / 1e6:g}M" if x >= 1e6 else f"{x / 1e3:g}k" if x else "0")
        axis.set_xlabel("env steps")
        axis.set_ylabel("return (last 20 episodes)")
        axis.grid(alpha=0.3)
        if axis.get_legend_handles_labels()[0]:  # none where no run of the env kept its curve
            axis.legend(fontsize=7)
    for axis in list(axes.flat)[len(env_ids):]:
        axis.set_visible(False)
    lost = sum(1 for r in runs if "run_dir" not in r and r.get("curve") is None)
    figure.suptitle(f"{suite}: mean over seeds (their number in brackets) ± one std"
                    + (f"\n{lost} runs whose curve was not kept are left out" if lost else ""), fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


# ------------------------------------------------------------------------- normalised scores
# The PPO paper's Table 1 (Schulman et al. 2017): its averages for the settings our table1 suite runs.
PAPER_TABLE1 = {"plain": -0.39, "clip": 0.82, "kl-adaptive": 0.74, "kl-fixed": 0.71}
PAPER_SETTINGS = {"plain": "no clipping or penalty", "clip": "clipping, ε = 0.2",
                  "kl-adaptive": "adaptive KL, d_targ = 0.01", "kl-fixed": "fixed KL, β = 1"}
LAST_EPISODES = 100  # the paper's score of a run: the mean return of its last 100 episodes


def last_episodes_mean(run_dir: str) -> Optional[float]:
    """The mean return of the run's last 100 episodes by the step they ended at; None if none ended."""
    steps, returns = episode_returns(run_dir)
    return float(returns[np.argsort(steps, kind="stable")][-LAST_EPISODES:].mean()) if len(returns) else None


def normalise(scores: dict, random: dict) -> dict:
    """{(label, env): [score per seed]} -> the same, normalised per env so that the random policy's
    score is 0 and the best label's mean over seeds is 1 (above 1 for a seed better than that mean)."""
    normalised = {}
    for env_id in {env_id for _, env_id in scores}:
        best = max(np.mean(values) for (_, env), values in scores.items() if env == env_id)
        if not best > random[env_id]:
            raise UsageError(f"on {env_id} no setting scores above the random policy ({best:.1f} against "
                             f"{random[env_id]:.1f}): nothing to normalise by")
        for (label, env), values in scores.items():
            if env == env_id:
                normalised[label, env] = [(v - random[env_id]) / (best - random[env_id]) for v in values]
    return normalised


def score_matrices(normalised: dict) -> tuple[dict, list]:
    """{label: runs x tasks array} in rliable's layout, over the tasks every label has runs of, with
    as many runs of each as the task with the fewest has (the first seeds), and those tasks."""
    labels = sorted({label for label, _ in normalised}, key=script_rank)
    tasks = sorted(env for env in {env for _, env in normalised} if all((label, env) in normalised for label in labels))
    if not tasks:
        raise UsageError("no task has runs of every setting")
    runs = min(len(normalised[label, env]) for label in labels for env in tasks)
    return {label: np.array([normalised[label, env][:runs] for env in tasks]).T for label in labels}, tasks


def keep_records(runs: list[dict], folder: str) -> list[dict]:
    """Write a record of each run, `<folder>/<script>/<env id>/seed_<seed>.json`: its summary's numbers,
    the mean return of its last 100 episodes and its learning curve. Then return every record in the
    folder, earlier ones included: committed, they are the suite's raw results, and a later session
    that runs more tasks reports them all."""
    for run in runs:
        steps, returns = episode_returns(run["run_dir"])
        grid = np.linspace(0, run["global_step"], CURVE_POINTS + 1)[1:]
        record = {**{key: run[key] for key in ("script", *COLUMNS[1:])}, "episodes": len(returns),
                  "last_100_return": last_episodes_mean(run["run_dir"]), "curve_steps": grid.tolist(),
                  "curve": learning_curve(steps, returns, grid).tolist(), "args": run["args"]}
        path = os.path.join(folder, run["script"], run["env_id"].replace("/", "_").replace(":", "_"),
                            f"seed_{run['seed']}.json")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            json.dump(record, f, indent=1)
    records = []
    for path in glob.glob(os.path.join(glob.escape(folder), "*", "*", "seed_*.json")):
        with open(path) as f:
            records.append(json.load(f))
    records.sort(key=lambda r: (script_rank(r["script"]), r["env_id"], r["seed"]))
    return records


def write_normalised(runs: list[dict], random: dict, suite: str, out: str) -> list[str]:
    """scores.csv, normalised.md, normalised.png and improvement.png: the runs (records of keep_records)
    scored as in the paper's Table 1, aggregated with rliable. Returns the files written. SB3's runs
    (--versus-sb3) and runs in which no episode ended are left out."""
    no_episode = [r for r in runs if r["last_100_return"] is None and not r["script"].endswith("@sb3")]
    runs = [r for r in runs if r["last_100_return"] is not None and not r["script"].endswith("@sb3")]
    settings = {}
    for run in runs:  # one setting's runs of one task must differ in their seeds alone
        flags = {key: value for key, value in (run.get("args") or {}).items()
                 if key not in ("seed", "runs_dir", "resume")}
        if settings.setdefault((run["script"], run["env_id"]), flags) != flags:
            raise UsageError(f"the runs of {run['script']} on {run['env_id']} were made with different settings; "
                             "remove the records of the old ones")
    scores = {}
    for run in runs:
        scores.setdefault((run["script"], run["env_id"]), []).append(run["last_100_return"])
    labels = {label for label, _ in scores}
    complete = {env for _, env in scores if all((label, env) in scores for label in labels)}
    normalised = normalise({key: values for key, values in scores.items() if key[1] in complete}, random)
    for run in runs:  # a task not every setting has run is not normalised: its best may be missing
        key = run["script"], run["env_id"]
        run["normalised"] = normalised[key][scores[key].index(run["last_100_return"])] if key in normalised else None
    with open(os.path.join(out, "scores.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=("script", "env_id", "seed", "global_step", "last_100_return",
                                               "normalised"), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(runs)
    matrices, tasks = score_matrices(normalised)
    left_out = sorted({env for _, env in scores} - set(tasks))
    silent = [f"{shown(r['script'])} on {r['env_id']}, seed {r['seed']}" for r in no_episode]
    aggregates = {}
    for label, matrix in matrices.items():
        aggregates[label] = [interval(matrix, metrics.aggregate_mean), interval(matrix, metrics.aggregate_iqm)]
    lines = [f"# Suite {suite}: normalised scores", "",
             f"Made by `python benchmark/report.py --suite {suite} --normalise`. A run's score is the mean return of "
             f"its last {LAST_EPISODES} training episodes; per task, (score − random) / (best − random), where random "
             "is a uniformly random policy's mean return (benchmark/results/random_scores) and best the highest mean "
             "over seeds among the settings here, as in the PPO paper's Table 1. The mean and the interquartile mean "
             "(IQM) are over every run of every task, with 95% stratified-bootstrap confidence intervals "
             f"({BOOTSTRAP_SAMPLES:,} resamples), by rliable.", "",
             "Here the best is taken over the settings of this table; the paper took it over its 11 settings "
             "(3 clipping, 3 adaptive KL, 4 fixed KL, and none), so its averages are not like for like with ours.", "",
             f"Tasks: {', '.join(tasks)}; {len(next(iter(matrices.values())))} seeds each."
             + (f" Left out, not run with every setting: {', '.join(left_out)}." if left_out else "")
             + (f" Left out, no episode ended: {', '.join(silent)}." if silent else ""), "",
             "| setting | " + " | ".join(tasks) + " | mean [95% CI] | IQM [95% CI] | paper's average |",
             "|---" * (len(tasks) + 4) + "|"]
    for label, matrix in matrices.items():
        cells = [f"{value:.2f}" for value in matrix.mean(axis=0)]
        cells += ["{:.2f} [{:.2f}, {:.2f}]".format(*estimate) for estimate in aggregates[label]]
        variant = label.partition("@")[2]
        paper = f"{PAPER_TABLE1[variant]:.2f} ({PAPER_SETTINGS[variant]})" if variant in PAPER_TABLE1 else "–"
        lines.append(f"| {shown(label)} | " + " | ".join(cells) + f" | {paper} |")
    lines += ["", "Probability of improvement, P(X > Y): the chance that a run of X outscores a run of Y on a "
              "task drawn at random (Mann-Whitney U per task, averaged over tasks), with its 95% bootstrap interval.",
              "", "| X | Y | P(X > Y) [95% CI] |", "|---|---|---|"]
    pairs = {}
    for i, x in enumerate(matrices):
        for y in list(matrices)[i + 1:]:
            pairs[f"{x},{y}"] = (matrices[x], matrices[y])
    improvement, improvement_intervals = bootstrap(pairs, metrics.probability_of_improvement)
    for pair, probability in improvement.items():
        x, y = pair.split(",")
        low, high = np.ravel(improvement_intervals[pair])
        lines.append(f"| {shown(x)} | {shown(y)} | {probability:.2f} [{float(low):.2f}, {float(high):.2f}] |")
    lines += ["", "Raw scores (mean return of the last 100 episodes), per seed:", "",
              "| setting | task | scores | random | normalised |", "|---|---|---|---|---|"]
    for (label, env_id), values in sorted(scores.items(), key=lambda item: (script_rank(item[0][0]), item[0][1])):
        shares = (", ".join(f"{v:.2f}" for v in normalised[label, env_id]) if (label, env_id) in normalised
                  else "– (not every setting has run this task)")
        lines.append(f"| {shown(label)} | {env_id} | {', '.join(number(v) for v in values)} | "
                     f"{number(random[env_id])} | {shares} |")
    with open(os.path.join(out, "normalised.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    plot_normalised(aggregates, improvement, improvement_intervals, out)
    return ["scores.csv", "normalised.md", "normalised.png", "improvement.png"]


def plot_normalised(aggregates: dict, improvement: dict, improvement_intervals: dict, out: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from rliable import plot_utils

    names = {label: shown(label) for label in aggregates}
    figure, _ = plot_utils.plot_interval_estimates(
        {names[label]: np.array([mean[0], iqm[0]]) for label, (mean, iqm) in aggregates.items()},
        {names[label]: np.array([[mean[1], iqm[1]], [mean[2], iqm[2]]]) for label, (mean, iqm) in aggregates.items()},
        metric_names=["Mean", "IQM"], algorithms=list(names.values()), xlabel="normalised score",
        xlabel_y_coordinate=-0.3, subfigure_width=4.0, row_height=0.6)
    figure.savefig(os.path.join(out, "normalised.png"), dpi=90, bbox_inches="tight")
    plt.close(figure)
    pair_names = {pair: ",".join(map(shown, pair.split(","))) for pair in improvement}
    axis = plot_utils.plot_probability_of_improvement(
        {pair_names[pair]: np.array([p]) for pair, p in improvement.items()},
        {pair_names[pair]: np.ravel(i).reshape(2, 1) for pair, i in improvement_intervals.items()},
        figsize=(6, 0.6 * len(improvement) + 1))
    axis.figure.savefig(os.path.join(out, "improvement.png"), dpi=90, bbox_inches="tight")
    plt.close(axis.figure)


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


def read_random_scores(path: str, env_ids: set) -> dict:
    """{env id: a random policy's mean return} from benchmark/random_scores.py's JSON, for every env of env_ids."""
    try:
        with open(path) as f:
            random = {env_id: score["mean"] for env_id, score in json.load(f)["scores"].items()}
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as error:
        raise UsageError(f"cannot read random scores from {path}: {error!r}")
    missing = sorted(env_ids - set(random))
    if missing:
        raise UsageError(f"no random score for {', '.join(missing)} in {path}; "
                         f"measure it with python benchmark/random_scores.py --env-ids {' '.join(missing)}")
    return random


def main(args: Args) -> int:
    if args.speed:
        print(f"wrote {write_speed_table(args.speed)}")
        return 0
    runs = load_runs(args.runs_dir, args.suite)
    apply_thresholds(runs, parse_thresholds(args.thresholds))
    out = os.path.join(args.out, args.suite)
    if (args.records or args.normalise) and (runs or os.path.isdir(os.path.join(out, "records"))):
        runs = keep_records(runs, os.path.join(out, "records"))  # this session's runs and earlier ones
    if not runs:
        raise UsageError(f"no finished runs under {os.path.join(args.runs_dir, args.suite)}; "
                         f"run python benchmark/run.py --suite {args.suite} first")
    random = read_random_scores(args.random_scores, {r["env_id"] for r in runs}) if args.normalise else {}
    with open(args.peers, "rb") as f:
        peers = tomllib.load(f)["peer"]
    os.makedirs(out, exist_ok=True)
    write_csv(runs, os.path.join(out, "runs.csv"))
    write_markdown(runs, peers, args.suite, os.path.join(out, "results.md"))
    plot_curves(runs, args.suite, os.path.join(out, "curves.png"))
    written = ["runs.csv", "results.md", "curves.png"]
    if args.normalise:
        written += write_normalised(runs, random, args.suite, out)
    if args.records or args.normalise:
        written = ["records/"] + written
    print(f"{len(runs)} runs: wrote {', '.join(written)} to {out}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(tyro.cli(Args, description=__doc__.split("\n\n")[0])))
    except UsageError as error:
        print(f"report.py: error: {error}", file=sys.stderr)
        sys.exit(2)
