"""Train the Stable-Baselines3 counterpart of one of our runs, with the same hyperparameters, for timing.

Reads a run's summary.json (its "args" are the run's full settings) and trains SB3's PPO or A2C, or
sb3-contrib's TRPO, on the same env, seed, budget and settings: the same network (two 64-unit tanh
layers, separate actor and critic, orthogonal init), envs x steps per update, minibatches, epochs,
learning rate and its annealing, γ, λ, clipping, advantage and observation/reward normalisation, CG
and line-search settings. Torch gets one thread, as our scripts have by default. Writes the numbers
benchmark/speed.py compares, timed the way our scripts time themselves (training loop only):

    python benchmark/sb3_train.py --summary runs/.../summary.json --out sb3.json

Differences that remain: sb3-contrib's TRPO bounds KL(π_new‖π_old) where ours bounds KL(π_old‖π_new);
ppo.py uses torch's fused Adam; SB3's timed window also holds its set-up (the first env reset). Settings
SB3 cannot reproduce (--clip-vloss, a2c's --value-loss huber, trpo's --no-line-search) are refused.

Needs requirements-bench.txt installed. benchmark/speed.py --peers runs it; it is not meant to be
run alone.
"""

import collections
import json
import math
import sys
import time
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import tyro

PEERS = {"ppo": "stable-baselines3 PPO", "ppo_continuous": "stable-baselines3 PPO", "a2c": "stable-baselines3 A2C",
         "trpo": "sb3-contrib TRPO"}


@dataclass
class Args:
    summary: str
    """summary.json of our run to match"""
    out: str
    """where to write the SB3 run's numbers (JSON)"""


class UsageError(Exception):
    """A setting of ours that SB3 has no equivalent for: reported in one line, exit status 2."""


def learning_rate(args: dict):
    """A constant, or our --anneal-lr schedule: update i of n gets lr0 (1 - i/n). SB3 asks for the rate
    after each rollout with the fraction of steps still to go, p = 1 - (i+1) b / total, from which i."""
    if not args.get("anneal_lr"):
        return args["learning_rate"]
    batch = args["num_envs"] * args["num_steps"]
    updates = math.ceil(args["total_timesteps"] / batch)

    def schedule(progress_remaining: float) -> float:
        i = round((1 - progress_remaining) * args["total_timesteps"] / batch) - 1
        return args["learning_rate"] * (1 - min(max(i, 0), updates - 1) / updates)
    return schedule


def check_matchable(script: str, args: dict) -> None:
    if args.get("clip_vloss"):
        raise UsageError("--clip-vloss: SB3's clip_range_vf is not the same value clipping (it has no max of both)")
    if args.get("value_loss") == "huber":
        raise UsageError("--value-loss huber: SB3's A2C has only the squared error")
    if script == "trpo" and not args.get("line_search"):
        raise UsageError("--no-line-search: sb3-contrib's TRPO always checks its step")


def make_model(script: str, args: dict, env):
    """SB3's model with our run's settings. Our value loss is ½ (V - R)² and SB3's (V - R)², so SB3's
    vf_coef is half ours; SB3 stops an epoch at 1.5 target_kl, so it gets ours / 1.5."""
    from stable_baselines3 import A2C, PPO
    check_matchable(script, args)
    batch = args["num_envs"] * args["num_steps"]
    common = dict(policy="MlpPolicy", env=env, n_steps=args["num_steps"], gamma=args["gamma"],
                  gae_lambda=args["gae_lambda"], seed=args["seed"], device="cpu", verbose=0)
    if script in ("ppo", "ppo_continuous"):
        target_kl = args["target_kl"] / 1.5 if args["target_kl"] is not None else None
        return PPO(**common, learning_rate=learning_rate(args), batch_size=batch // args["num_minibatches"],
                   n_epochs=args["update_epochs"], clip_range=args["clip_coef"], normalize_advantage=args["norm_adv"],
                   ent_coef=args["ent_coef"], vf_coef=args["vf_coef"] / 2, max_grad_norm=args["max_grad_norm"],
                   target_kl=target_kl)
    if script == "a2c":
        return A2C(**common, learning_rate=learning_rate(args), ent_coef=args["ent_coef"], vf_coef=args["vf_coef"] / 2,
                   max_grad_norm=args["max_grad_norm"], use_rms_prop=args["optimizer"] == "rmsprop",
                   rms_prop_eps=1e-5, normalize_advantage=args["norm_adv"])
    if script == "trpo":
        from sb3_contrib import TRPO
        return TRPO(**common, learning_rate=args["learning_rate"], batch_size=batch // args["num_minibatches"],
                    n_critic_updates=args["critic_epochs"], cg_max_steps=args["cg_iters"],
                    cg_damping=args["cg_damping"], line_search_shrinking_factor=args["backtrack_coef"],
                    line_search_max_iter=args["backtrack_iters"], normalize_advantage=args["norm_adv"],
                    target_kl=args["max_kl"])
    raise UsageError(f"no SB3 counterpart for {script}.py")


def main(args: Args) -> None:
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    with open(args.summary) as f:
        ours = json.load(f)
    script, run_args, threshold = ours["algorithm"], ours["args"], ours["reward_threshold"]
    torch.set_num_threads(run_args["torch_threads"])
    env = make_vec_env(ours["env_id"], n_envs=run_args["num_envs"], seed=run_args["seed"], vec_env_cls=DummyVecEnv)
    if run_args.get("norm_obs") or run_args.get("norm_reward"):
        env = VecNormalize(env, norm_obs=run_args.get("norm_obs", False), norm_reward=run_args.get("norm_reward", False),
                           clip_obs=10.0, clip_reward=10.0, gamma=run_args["gamma"], epsilon=1e-8)
    model = make_model(script, run_args, env)

    class Threshold(BaseCallback):
        """Episode returns as the Monitor wrapper records them (raw), and the first step at which the
        mean of the last 20 reached the threshold: our scripts' steps_to_threshold."""

        def __init__(self):
            super().__init__()
            self.returns = collections.deque(maxlen=20)
            self.steps: Optional[int] = None
            self.seconds: Optional[float] = None

        def _on_step(self) -> bool:
            ended = [float(info["episode"]["r"]) for info in self.locals["infos"] if "episode" in info]
            self.returns.extend(ended)
            if (ended and self.steps is None and threshold is not None and len(self.returns) == self.returns.maxlen
                    and np.mean(self.returns) >= threshold):  # checked as ours is: when an episode ends
                self.steps, self.seconds = self.num_timesteps, time.perf_counter() - start
            return True

    callback = Threshold()
    start = time.perf_counter()
    model.learn(total_timesteps=run_args["total_timesteps"], callback=callback)
    seconds = time.perf_counter() - start
    result = {"peer": PEERS[script], "global_step": model.num_timesteps,
              "steps_to_threshold": callback.steps, "seconds_to_threshold": callback.seconds,
              "sps": model.num_timesteps / seconds, "wall_seconds": seconds,
              "final_return": float(np.mean(callback.returns)) if callback.returns else None}
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)


if __name__ == "__main__":
    try:
        main(tyro.cli(Args))
    except UsageError as error:
        print(f"sb3_train.py: error: {error}", file=sys.stderr)
        sys.exit(2)
