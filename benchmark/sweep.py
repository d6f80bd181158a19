"""Compare hyperparameter settings of a script over seeds: steps to the env's threshold, returns.

Each named setting in a JSON file is a dict of the script's Args fields; every (setting, seed)
pair trains once, `--jobs` at a time, with the script's train() called in-process. Wall-clock figures from parallel jobs
share the cores, so use benchmark/speed.py for timings; this is for steps and returns.

    python benchmark/sweep.py --configs benchmark/configs/ppo_defaults.json --seeds 1 2 3
    python benchmark/sweep.py --script ppo_continuous --configs benchmark/configs/ppo_continuous_mujoco.json
"""

import contextlib
import importlib
import io
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
from dataclasses import dataclass, field

import tyro

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass
class Args:
    configs: str
    """JSON file: {"setting name": {"env_id": ..., "learning_rate": ..., ...}, ...}"""
    script: str = "ppo"
    """the script (module name) to train with"""
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3])
    """seeds to run each setting with"""
    jobs: int = 2
    """runs at a time"""
    out: str = ""
    """where to write the raw results as JSON (default: benchmark/results/tuning/<configs name>.json)"""


def run(job: tuple) -> dict:
    sys.path.insert(0, ROOT)
    script, name, settings, seed, runs_dir = job
    module = importlib.import_module(script)
    args = module.Args(seed=seed, runs_dir=runs_dir, save_model=False, eval_episodes=5, **settings)
    with contextlib.redirect_stdout(io.StringIO()):
        summary = module.train(args)
    keep = ("env_id", "seed", "global_step", "steps_to_threshold", "final_return", "eval_return",
            "eval_return_std", "largest_kl_after_step", "rejected_steps")  # the last two from trpo.py alone
    return {"setting": name, **{key: summary[key] for key in keep if key in summary}}


def main(args: Args) -> None:
    configs = json.load(open(args.configs))
    results = []
    with tempfile.TemporaryDirectory() as runs_dir, multiprocessing.Pool(args.jobs) as pool:
        jobs = [(args.script, name, settings, seed, runs_dir)
                for name, settings in configs.items() for seed in args.seeds]
        for result in pool.imap(run, jobs):
            results.append(result)
            print(json.dumps(result), flush=True)
    out = args.out or os.path.join(ROOT, "benchmark", "results", "tuning", os.path.basename(args.configs))
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump({"command": "python benchmark/sweep.py " + " ".join(sys.argv[1:]), "configs": configs,
                   "results": results}, f, indent=2)
    print(f"\n| setting | env | seeds reaching threshold | median steps to threshold | median final return | "
          "median eval return |")
    print("|---|---|---|---|---|---|")
    for name, settings in configs.items():
        rows = [r for r in results if r["setting"] == name]
        steps = [r["steps_to_threshold"] for r in rows if r["steps_to_threshold"] is not None]
        median_steps = f"{statistics.median(steps):,.0f}" if steps else "-"
        print(f"| {name} | {rows[0]['env_id']} | {len(steps)}/{len(rows)} | {median_steps} | "
              f"{statistics.median(r['final_return'] for r in rows):.1f} | "
              f"{statistics.median(r['eval_return'] for r in rows):.1f} |")


if __name__ == "__main__":
    main(tyro.cli(Args))
