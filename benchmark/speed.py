"""Steps and wall-clock to the solve threshold, steps/s and peak memory of one script on one env, and
with --peers the same for Stable-Baselines3's counterpart run with the same hyperparameters.

Runs `python <script> --env-id <env> --seed <s>` (with the script's defaults plus any extra flags)
for each seed, one at a time so the runs do not compete for cores, each under `/usr/bin/time -v`
for its peak resident memory. With --peers, each of our runs is
followed at once by SB3's PPO, A2C, DDPG or TD3, or sb3-contrib's TRPO, with our run's settings
(benchmark/sb3_train.py): the two alternate, seed by seed, so a machine that slows down or speeds up
during the session slows both. Writes the raw per-run results as JSON and prints a markdown table
with the median and min-max over seeds, and the ratios of the medians. With --nprocs (ppo.py and
ppo_continuous.py), each seed runs once with each number of processes, in turn, under torchrun for
more than one; the peak memory is then that of the largest process.

    python benchmark/speed.py --script ppo.py --env-id CartPole-v1 --seeds 1 2 3
    python benchmark/speed.py --script ppo.py --env-id CartPole-v1 --nprocs 1 2
    python benchmark/speed.py --script trpo.py --env-id CartPole-v1 --peers
    python benchmark/speed.py --script ppo_continuous.py --env-id HalfCheetah-v5 --extra="--total-timesteps 51200" --peers
"""

import glob
import importlib.util
import json
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

import tyro

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# kept where a summary.json has them: trpo.py's, --compile's, a3c.py's
ALGORITHM_KEYS = ("largest_kl_after_step", "rejected_steps", "compile_seconds",
                  "pushes", "staleness_mean", "staleness_max")
PEER_SCRIPTS = ("ppo.py", "ppo_continuous.py", "a2c.py", "trpo.py", "ddpg.py")  # those with an SB3 counterpart
TORCHRUN_SCRIPTS = ("ppo.py", "ppo_continuous.py")  # those that run under torchrun


@dataclass
class Args:
    script: str = "ppo.py"
    """the algorithm script to run, relative to the repository root"""
    env_id: str = "CartPole-v1"
    """env to train on"""
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3])
    """one run per seed"""
    extra: str = ""
    """further flags passed to the script, as one string, e.g. --extra='--total-timesteps 50000'"""
    peers: bool = False
    """also run SB3's counterpart with the same settings, alternating with ours"""
    nprocs: list[int] = field(default_factory=lambda: [1])
    """numbers of processes to compare, each seed with each number in turn; a number above 1 runs under torchrun"""
    out: str = "benchmark/results/speed"
    """folder for the raw results (one JSON file per script and env)"""


def usage_error(message: str) -> None:
    print(f"speed.py: error: {message}", file=sys.stderr)
    sys.exit(2)


def timed(command: list[str]) -> float:
    """Run a command under /usr/bin/time -v; its peak resident memory in MiB. A failure stops the benchmark."""
    result = subprocess.run(["/usr/bin/time", "-v", *command], capture_output=True, text=True, cwd=ROOT)
    if result.returncode != 0:
        sys.exit(f"run failed ({' '.join(command)}):\n{result.stderr[-2000:]}")
    return int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr).group(1)) / 1024


def run_ours(args: Args, seed: int, runs_dir: str, nproc: int = 1) -> tuple[dict, str]:
    """One run of our script, in nproc processes; its numbers and the path of its summary.json."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc)]
    command = [*(launcher if nproc > 1 else [sys.executable]), os.path.join(ROOT, args.script),
               "--env-id", args.env_id, "--seed", str(seed), "--runs-dir", runs_dir, "--no-save-model",
               "--no-cuda", *shlex.split(args.extra)]  # --no-cuda: SB3 runs on the CPU too
    peak_mib = timed(command)
    (path,) = glob.glob(os.path.join(runs_dir, "*", "summary.json"))
    with open(path) as f:
        summary = json.load(f)
    keep = ("reward_threshold", "steps_to_threshold", "seconds_to_threshold", "sps", "wall_seconds", "global_step",
            "final_return", "eval_return", *ALGORITHM_KEYS)
    return {"seed": seed, "nproc": nproc, **{key: summary[key] for key in keep if key in summary},
            "peak_rss_mib": peak_mib}, path


def run_peer(seed: int, summary_path: str) -> dict:
    """SB3's counterpart of the run whose summary.json is at summary_path."""
    out = os.path.join(os.path.dirname(summary_path), "sb3.json")
    peak_mib = timed([sys.executable, os.path.join(ROOT, "benchmark", "sb3_train.py"), "--summary", summary_path,
                      "--out", out])
    with open(out) as f:
        return {"seed": seed, **json.load(f), "peak_rss_mib": peak_mib}


def median(runs: list, key: str):
    values = [r[key] for r in runs if r[key] is not None]
    return statistics.median(values) if values else None


def spread(runs: list, key: str, missing: str = "not reached") -> str:
    """median (min – max) of key over runs; `missing` where no run has a value."""
    values = [r[key] for r in runs if r[key] is not None]
    if not values:
        return missing
    reached = f", {len(values)}/{len(runs)} reached" if len(values) < len(runs) else ""
    return f"{statistics.median(values):,.1f} ({min(values):,.1f} – {max(values):,.1f}{reached})"


def ratio(numerator, denominator) -> str:
    return f"{numerator / denominator:.2f}x" if numerator and denominator else "–"  # – where either has no value


def main(args: Args) -> None:
    if args.peers and args.script not in PEER_SCRIPTS:
        usage_error(f"--peers: SB3 has no counterpart of {args.script}; use one of {', '.join(PEER_SCRIPTS)}")
    if args.peers and importlib.util.find_spec("stable_baselines3") is None:
        usage_error("--peers needs SB3: pip install -r requirements-dev.txt")
    if args.nprocs != [1] and args.script not in TORCHRUN_SCRIPTS:
        usage_error(f"--nprocs: {args.script} runs in one process; use one of {', '.join(TORCHRUN_SCRIPTS)}")
    if args.nprocs != [1] and args.peers:
        usage_error("give either --nprocs or --peers, not both")
    if min(args.nprocs) < 1:
        usage_error(f"--nprocs must be positive, got {args.nprocs}")
    runs, peer_runs = [], []
    with tempfile.TemporaryDirectory() as runs_dir:
        for seed in args.seeds:
            for nproc in args.nprocs:
                result, summary_path = run_ours(args, seed, os.path.join(runs_dir, f"{seed}_{nproc}"), nproc)
                runs.append(result)
                print(f"seed {seed}, ours in {nproc} process(es): {result}", flush=True)
            if args.peers:
                peer_runs.append(run_peer(seed, summary_path))
                print(f"seed {seed}, SB3:  {peer_runs[-1]}", flush=True)
    results = {"script": args.script, "env_id": args.env_id, "extra_flags": args.extra,
               "command": "python benchmark/speed.py " + " ".join(sys.argv[1:]),
               "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
               "date": time.strftime("%Y-%m-%d"), "runs": runs}
    if args.peers:
        import sb3_contrib
        import stable_baselines3
        results.update(peer=peer_runs[0]["peer"], peer_versions={"stable-baselines3": stable_baselines3.__version__,
                                                                 "sb3-contrib": sb3_contrib.__version__},
                       peer_runs=peer_runs)
    os.makedirs(os.path.join(ROOT, args.out), exist_ok=True)
    safe_id = args.env_id.replace("/", "_").replace(":", "_")
    nprocs = f"_nprocs{'-'.join(map(str, args.nprocs))}" if args.nprocs != [1] else ""
    path = os.path.join(ROOT, args.out, f"{os.path.splitext(args.script)[0]}_{safe_id}{nprocs}.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=2)

    print(f"\n{args.script} on {args.env_id}, {len(args.seeds)} seeds; median (min – max). "
          f"Raw results: {os.path.relpath(path, ROOT)}\n")
    print("| run | steps to threshold | seconds to threshold | steps/s | peak memory (MiB) |")
    print("|---|---|---|---|---|")
    rows = [(args.script, runs)] if args.nprocs == [1] else [
        (f"{args.script}, {n} process{'es' if n > 1 else ''}", [r for r in runs if r["nproc"] == n])
        for n in args.nprocs]
    rows += [(results["peer"], peer_runs)] if args.peers else []
    # an env without a reward threshold (Pendulum-v1) has none to reach: say so rather than "not reached"
    missing = "not reached" if any(r.get("reward_threshold") is not None for r in runs) else "no threshold"
    for name, rows_runs in rows:
        print(f"| {name} | {spread(rows_runs, 'steps_to_threshold', missing)} | "
              f"{spread(rows_runs, 'seconds_to_threshold', missing)} | "
              f"{spread(rows_runs, 'sps')} | {spread(rows_runs, 'peak_rss_mib')} |")
    if args.peers:  # each ratio says how many times better ours is
        print(f"| ours better by (ratio of medians) | {ratio(median(peer_runs, 'steps_to_threshold'), median(runs, 'steps_to_threshold'))} | "
              f"{ratio(median(peer_runs, 'seconds_to_threshold'), median(runs, 'seconds_to_threshold'))} | "
              f"{ratio(median(runs, 'sps'), median(peer_runs, 'sps'))} | "
              f"{ratio(median(peer_runs, 'peak_rss_mib'), median(runs, 'peak_rss_mib'))} |")


if __name__ == "__main__":
    main(tyro.cli(Args))
