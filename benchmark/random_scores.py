"""What a random policy scores on each env: the 0 of a normalised score.

The PPO paper (Schulman et al. 2017, Table 1) scores each run by the mean return of its last 100
episodes and normalises per task so that a random policy scores 0 and the best setting 1. This
measures the random end here: each env is played for --episodes episodes with actions drawn
uniformly from its action space (the env's own seeded sampler), the env reset with seeds --seed,
--seed + 1, ...; the mean and standard deviation of the episode returns are written, one JSON file
per run, with a markdown table beside it.

    python benchmark/random_scores.py                                  # the paper's 7 MuJoCo tasks, v5
    python benchmark/random_scores.py --env-ids Pendulum-v1 --episodes 10
"""

import json
import os
import statistics
import sys
import time
from dataclasses import dataclass, field

import gymnasium as gym
import tyro

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAPER_TASKS = ["HalfCheetah-v5", "Hopper-v5", "InvertedDoublePendulum-v5", "InvertedPendulum-v5", "Reacher-v5",
               "Swimmer-v5", "Walker2d-v5"]


@dataclass
class Args:
    env_ids: list[str] = field(default_factory=lambda: list(PAPER_TASKS))
    """envs to play; the default is the PPO paper's 7 MuJoCo tasks in their v5 versions"""
    episodes: int = 100
    """episodes per env (the paper scores a run by its last 100)"""
    seed: int = 1
    """episode i resets with seed + i; the action sampler is seeded with seed"""
    out: str = "benchmark/results/random_scores"
    """folder for random_scores.json and random_scores.md"""


def usage_error(message: str) -> None:
    print(f"random_scores.py: error: {message}", file=sys.stderr)
    sys.exit(2)


def play(env_id: str, episodes: int, seed: int) -> list[float]:
    """The returns of `episodes` episodes of uniformly random actions."""
    env = gym.make(env_id)
    env.action_space.seed(seed)
    returns = []
    for i in range(episodes):
        env.reset(seed=seed + i)
        total, done = 0.0, False
        while not done:
            _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    env.close()
    return returns


def main(args: Args) -> None:
    if args.episodes < 1:
        usage_error(f"--episodes must be positive, got {args.episodes}")
    for env_id in args.env_ids:
        try:
            gym.spec(env_id)
        except gym.error.Error as error:
            usage_error(f"--env-ids {env_id}: {error}")
    scores = {}
    for env_id in args.env_ids:
        returns = play(env_id, args.episodes, args.seed)
        scores[env_id] = {"mean": statistics.fmean(returns), "std": statistics.pstdev(returns),
                          "episodes": len(returns), "returns": returns}
        print(f"{env_id}: {scores[env_id]['mean']:,.1f} ± {scores[env_id]['std']:,.1f} over {len(returns)} episodes",
              flush=True)
    out = args.out if os.path.isabs(args.out) else os.path.join(ROOT, args.out)
    os.makedirs(out, exist_ok=True)
    record = {"command": " ".join(["python benchmark/random_scores.py", *sys.argv[1:]]), "seed": args.seed,
              "date": time.strftime("%Y-%m-%d"), "gymnasium": gym.__version__, "scores": scores}
    with open(os.path.join(out, "random_scores.json"), "w") as f:
        json.dump(record, f, indent=1)
    lines = ["# Returns of a uniformly random policy", "",
             f"`{record['command']}` (gymnasium {gym.__version__}); raw returns in `random_scores.json`.", "",
             "| env | mean return | std | episodes |", "|---|---|---|---|"]
    lines += [f"| {env_id} | {s['mean']:,.1f} | {s['std']:,.1f} | {s['episodes']} |" for env_id, s in scores.items()]
    with open(os.path.join(out, "random_scores.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main(tyro.cli(Args))
