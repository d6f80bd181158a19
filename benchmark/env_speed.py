"""The physical limit: how fast the envs step alone, with random actions, in the vector env a script uses.

A script cannot train faster than its envs step. This measures that ceiling: a SyncVectorEnv of
num_envs copies (autoreset in the same step, as every script has it) stepped with random actions
drawn beforehand, so that neither a network nor the sampling of actions is timed. With --script,
the vector env is the script's own make_vec_env, with the wrappers it adds (episode statistics,
flattening, and with --norm-obs / --norm-reward the running normalisation): the difference to the
bare env is what those wrappers cost per step. Our steps/s in README.md's speed table divided by
this number is the share of the limit a script reaches.

    python benchmark/env_speed.py --env-id CartPole-v1 --num-envs 8                 # the env alone
    python benchmark/env_speed.py --env-id HalfCheetah-v5 --num-envs 4 --script a2c.py --norm-obs --norm-reward
    bash benchmark/env_speed.sh                                                     # README's table

Each measurement is repeated (--repeats, one after another) and the median reported; one JSON line
per measurement is appended to --out, named after the CPU, and a markdown table of everything
recorded there is written beside it.
"""

import importlib.util
import inspect
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Optional

import gymnasium as gym
import numpy as np
import tyro
from gymnasium.wrappers.utils import RunningMeanStd

from learning_bounds import cpu_model, slug

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass
class Args:
    env_id: str = "CartPole-v1"
    """env to step"""
    num_envs: int = 1
    """copies in the vector env"""
    steps: int = 50_000
    """env steps to time in each repeat, over all envs"""
    repeats: int = 5
    """timed repeats, one after another; the median is reported"""
    script: Optional[str] = None
    """build the vector env with this script's make_vec_env (its wrappers), e.g. a2c.py; default: bare gym.make"""
    norm_obs: bool = False
    """with --script: normalise observations with running statistics, as the script's --norm-obs"""
    norm_reward: bool = False
    """with --script: normalise rewards, as the script's --norm-reward"""
    seed: int = 1
    """seeds the envs and the random actions"""
    out: str = "benchmark/results/env_speed"
    """folder for the record (JSON lines) and the table (markdown), one of each per CPU model"""


def usage_error(message: str) -> None:
    print(f"env_speed.py: error: {message}", file=sys.stderr)
    sys.exit(2)


def script_vec_env(args: Args) -> gym.vector.VectorEnv:
    """The script's make_vec_env, given the running statistics its flags would give it."""
    path = os.path.join(ROOT, args.script)
    if not os.path.isfile(path):
        usage_error(f"--script {args.script}: no such script in {ROOT}")
    spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(path))[0], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    takes = inspect.signature(module.make_vec_env).parameters
    if (args.norm_obs and "obs_rms" not in takes) or (args.norm_reward and "return_rms" not in takes):
        usage_error(f"{args.script} does not normalise {'observations' if args.norm_obs else 'rewards'}")
    probe = gym.make(args.env_id)
    flat_size = gym.spaces.flatdim(probe.observation_space)
    probe.close()
    given = {"obs_rms": RunningMeanStd(shape=(flat_size,)) if args.norm_obs else None,
             "return_rms": RunningMeanStd(shape=()) if args.norm_reward else None, "gamma": 0.99}
    return module.make_vec_env(args.env_id, args.num_envs, **{k: v for k, v in given.items() if k in takes})


def steps_per_second(envs: gym.vector.VectorEnv, args: Args) -> float:
    """Time args.steps env steps (rounded up to whole vector steps) with actions drawn beforehand."""
    envs.action_space.seed(args.seed)
    actions = [envs.action_space.sample() for _ in range(256)]
    envs.reset(seed=args.seed)
    vector_steps = -(-args.steps // args.num_envs)
    start = time.perf_counter()
    for i in range(vector_steps):
        envs.step(actions[i % len(actions)])
    return vector_steps * args.num_envs / (time.perf_counter() - start)


def table(record: str, cpu: str) -> str:
    """Markdown: one row per (env, envs, wrappers), from the last measurement of each."""
    rows = {}
    with open(record) as f:
        for line in f:
            entry = json.loads(line)
            rows[(entry["env_id"], entry["num_envs"], entry["wrappers"])] = entry
    lines = [f"# Env steps per second alone, random actions, on {cpu}", "",
             f"Made with `python benchmark/env_speed.py`; raw values in `{os.path.basename(record)}`.", "",
             "| env | envs | wrappers | steps/s (median) | min – max | repeats |", "|---|---|---|---|---|---|"]
    for (env_id, num_envs, wrappers), e in sorted(rows.items()):
        lines.append(f"| {env_id} | {num_envs} | {wrappers} | {e['median']:,.0f} | {min(e['sps']):,.0f} – "
                     f"{max(e['sps']):,.0f} | {len(e['sps'])} |")
    return "\n".join(lines) + "\n"


def main(args: Args) -> None:
    if args.num_envs < 1 or args.steps < 1 or args.repeats < 1:
        usage_error("--num-envs, --steps and --repeats must be positive")
    if (args.norm_obs or args.norm_reward) and not args.script:
        usage_error("--norm-obs and --norm-reward need --script (the wrappers are the script's)")
    if args.script is None:
        try:
            gym.spec(args.env_id)
        except gym.error.Error as error:
            usage_error(f"--env-id {args.env_id}: {error}")
        envs = gym.vector.SyncVectorEnv([lambda: gym.make(args.env_id)] * args.num_envs,
                                        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
        wrappers = "none (gym.make)"
    else:
        envs = script_vec_env(args)
        wrappers = args.script + "".join(f" --{flag}" for flag, on in (("norm-obs", args.norm_obs),
                                                                        ("norm-reward", args.norm_reward)) if on)
    sps = [steps_per_second(envs, args) for _ in range(args.repeats)]
    envs.close()
    entry = {"env_id": args.env_id, "num_envs": args.num_envs, "wrappers": wrappers, "steps": args.steps,
             "sps": sps, "median": statistics.median(sps), "cpu": cpu_model(), "cores": os.cpu_count(),
             "date": time.strftime("%Y-%m-%d")}
    print(f"{args.env_id}, {args.num_envs} envs, wrappers {wrappers}: {entry['median']:,.0f} steps/s "
          f"(median of {args.repeats}, {min(sps):,.0f} – {max(sps):,.0f})", flush=True)
    out = os.path.join(ROOT, args.out) if not os.path.isabs(args.out) else args.out
    os.makedirs(out, exist_ok=True)
    record = os.path.join(out, slug(entry["cpu"]) + ".jsonl")
    with open(record, "a") as f:
        f.write(json.dumps(entry) + "\n")
    with open(record[:-len(".jsonl")] + ".md", "w") as f:
        f.write(table(record, entry["cpu"]))


if __name__ == "__main__":
    main(tyro.cli(Args))
