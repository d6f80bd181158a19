"""Same seed, same run, before and after a change that should not change what a script computes:
run each script from the command line with seed 1, keep every episode's return (from tensorboard)
and the summary's figures, and compare them with those recorded before.

    python benchmark/same_seed.py ROOT OUT.json [--only a2c.py,ppo.py] [--compare BEFORE.json]

ROOT is a checkout of the scripts (e.g. a `git worktree` of the commit before the change). Results
hold on the machine that made them only: another CPU follows other trajectories (README.md).
"""
import json
import os
import subprocess
import sys
import tempfile

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

RUNS = [
    ("reinforce.py", ["--env-id", "CartPole-v1", "--total-timesteps", "10000"]),
    ("reinforce.py", ["--env-id", "InvertedPendulum-v5", "--norm-obs", "--total-timesteps", "5000"]),
    ("reinforce_baseline.py", ["--env-id", "CartPole-v1", "--total-timesteps", "10000"]),
    ("reinforce_baseline.py", ["--env-id", "InvertedPendulum-v5", "--norm-obs", "--total-timesteps", "5000"]),
    ("a2c.py", ["--env-id", "CartPole-v1", "--total-timesteps", "10000"]),
    ("a2c.py", ["--env-id", "Pendulum-v1", "--total-timesteps", "10000"]),
    ("trpo.py", ["--env-id", "CartPole-v1", "--total-timesteps", "10000"]),
    ("trpo.py", ["--env-id", "Pendulum-v1", "--total-timesteps", "8192"]),
    ("ppo.py", ["--env-id", "CartPole-v1", "--total-timesteps", "20000"]),
    ("ppo_continuous.py", ["--env-id", "Pendulum-v1", "--total-timesteps", "8192"]),
]
KEYS = ("global_step", "final_return", "eval_return", "eval_return_std", "steps_to_threshold")

def record(root, only=None):
    out = {}
    for script, flags in RUNS:
        if only and script not in only:
            continue
        with tempfile.TemporaryDirectory() as d:
            r = subprocess.run([sys.executable, os.path.join(root, script), *flags, "--seed", "1",
                                "--eval-episodes", "3", "--runs-dir", d], capture_output=True, text=True, cwd=d)
            assert r.returncode == 0, r.stderr[-2000:]
            (run,) = os.listdir(d)
            summary = json.load(open(os.path.join(d, run, "summary.json")))
            acc = EventAccumulator(os.path.join(d, run), size_guidance={"scalars": 0}); acc.Reload()
            returns = [e.value for e in acc.Scalars("charts/episodic_return")]
        key = script + " " + " ".join(flags)
        out[key] = {**{k: summary.get(k) for k in KEYS}, "episodes": len(returns), "returns": returns}
        print(key, {k: out[key][k] for k in (*KEYS, "episodes")}, flush=True)
    return out

if __name__ == "__main__":
    root, path = sys.argv[1], sys.argv[2]
    only = sys.argv[sys.argv.index("--only") + 1].split(",") if "--only" in sys.argv else None
    result = record(root, only)
    json.dump(result, open(path, "w"), indent=1)
    if "--compare" in sys.argv:
        before = json.load(open(sys.argv[sys.argv.index("--compare") + 1]))
        for key in result:
            same = before[key] == result.get(key)
            print(("SAME " if same else "DIFFERENT ") + key)
