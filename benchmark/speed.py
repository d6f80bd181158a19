"""Steps and wall-clock to the solve threshold, steps/s and peak memory of one script on one env.

Runs `python <script> --env-id <env> --seed <s>` (with the script's defaults plus any extra flags)
for each seed, one at a time so the runs do not compete for cores, each under `/usr/bin/time -v`
for its peak resident memory. Writes the raw per-run results as JSON and prints a markdown table
with the median and min-max over seeds.

    python benchmark/speed.py --script ppo.py --env-id CartPole-v1 --seeds 1 2 3
    python benchmark/speed.py --script ppo_continuous.py --env-id HalfCheetah-v5 --extra="--total-timesteps 204800"
"""

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
ALGORITHM_KEYS = ("largest_kl_after_step", "rejected_steps")  # kept from a summary.json that has them (trpo.py)


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
    out: str = "benchmark/results/speed"
    """folder for the raw results (one JSON file per script and env)"""


def run_once(args: Args, seed: int, runs_dir: str) -> dict:
    command = [sys.executable, os.path.join(ROOT, args.script), "--env-id", args.env_id, "--seed", str(seed),
               "--runs-dir", runs_dir, "--no-save-model", *shlex.split(args.extra)]
    result = subprocess.run(["/usr/bin/time", "-v", *command], capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"run failed ({' '.join(command)}):\n{result.stderr[-2000:]}")
    peak_kib = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr).group(1))
    (run_dir,) = [d for d in os.listdir(runs_dir) if f"__{seed}__" in d]
    summary = json.load(open(os.path.join(runs_dir, run_dir, "summary.json")))
    return {"seed": seed, "steps_to_threshold": summary["steps_to_threshold"],
            "seconds_to_threshold": summary["seconds_to_threshold"], "sps": summary["sps"],
            "wall_seconds": summary["wall_seconds"], "global_step": summary["global_step"],
            "final_return": summary["final_return"], "eval_return": summary["eval_return"],
            "peak_rss_mib": peak_kib / 1024,
            **{key: summary[key] for key in ALGORITHM_KEYS if key in summary}}


def spread(values: list) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "not reached"
    return f"{statistics.median(values):,.1f} ({min(values):,.1f} – {max(values):,.1f})"


def main(args: Args) -> None:
    runs = []
    with tempfile.TemporaryDirectory() as runs_dir:
        for seed in args.seeds:
            runs.append(run_once(args, seed, os.path.join(runs_dir, str(seed))))
            print(f"seed {seed}: {runs[-1]}", flush=True)
    reached = sum(r["steps_to_threshold"] is not None for r in runs)
    results = {"script": args.script, "env_id": args.env_id, "extra_flags": args.extra,
               "command": "python benchmark/speed.py " + " ".join(sys.argv[1:]),
               "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
               "date": time.strftime("%Y-%m-%d"), "runs": runs}
    os.makedirs(os.path.join(ROOT, args.out), exist_ok=True)
    path = os.path.join(ROOT, args.out, f"{os.path.splitext(args.script)[0]}_{args.env_id}.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=2)
    print(f"\n{args.script} on {args.env_id}, {len(runs)} seeds ({reached} reached the threshold); "
          f"median (min – max). Raw results: {os.path.relpath(path, ROOT)}\n")
    print("| steps to threshold | seconds to threshold | steps/s | peak memory (MiB) |")
    print("|---|---|---|---|")
    print(f"| {spread([r['steps_to_threshold'] for r in runs])} | {spread([r['seconds_to_threshold'] for r in runs])}"
          f" | {spread([r['sps'] for r in runs])} | {spread([r['peak_rss_mib'] for r in runs])} |")


if __name__ == "__main__":
    main(tyro.cli(Args))
