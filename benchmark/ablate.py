"""Run a script with one of its lines changed: an ablation, for finding which difference from a peer
matters (issue 23) without a flag in the script for every experiment.

Each ablation names the script, the exact text it replaces (which must occur once, so an ablation that
no longer fits its script fails loudly instead of running the script unchanged) and the text put in
its place. The changed script runs as itself (`__main__`, its own path as `__file__`, its flags), so
it leaves what the script leaves and resumes from its own checkpoints.

    python benchmark/ablate.py return-reset trpo.py --env-id Hopper-v5 --seed 1 --norm-reward
    python benchmark/ablate.py --list

benchmark/run.py runs a config table with an `ablation = "<name>"` key this way (only when the table
is named in --scripts: `--scripts trpo@return-reset`).
"""

import os
import sys
import types

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name -> (script, what it changes, the text replaced, the replacement)
ABLATIONS = {
    "return-reset": (
        "trpo.py",
        "the running return behind reward normalisation as Stable-Baselines3's VecNormalize keeps it: "
        "G <- γG + r, the statistics updated with G, then G <- 0 after every episode end, a truncation "
        "as well as a termination (gymnasium's NormalizeReward, which the script copies, cuts G at a "
        "termination's own step and never at a truncation)",
        """        self.discounted_reward = self.discounted_reward * self.gamma * (1 - terminated) + float(reward)
        if self.update_running_mean:
            update_with_one(self.return_rms, self.discounted_reward[0])
        return obs, reward / np.sqrt(self.return_rms.var + self.epsilon), terminated, truncated, info
""",
        """        self.discounted_reward = self.discounted_reward * self.gamma + float(reward)
        if self.update_running_mean:
            update_with_one(self.return_rms, self.discounted_reward[0])
        scaled = reward / np.sqrt(self.return_rms.var + self.epsilon)
        if terminated or truncated:
            self.discounted_reward = self.discounted_reward * 0.0
        return obs, scaled, terminated, truncated, info
""",
    ),
    "kl-new-old": (
        "trpo.py",
        "the trust region measured as KL(π_θ ‖ π_θold), sb3-contrib's direction, in place of "
        "KL(π_θold ‖ π_θ) (the same Fisher matrix at θold; they differ at third order)",
        """        (mean_old, log_std_old), (mean, log_std) = old, new
        return (log_std - log_std_old + ((2 * log_std_old).exp() + (mean_old - mean) ** 2)
                / (2 * (2 * log_std).exp()) - 0.5).sum(-1)
""",
        """        (mean_old, log_std_old), (mean, log_std) = old, new
        return (log_std_old - log_std + ((2 * log_std).exp() + (mean - mean_old) ** 2)
                / (2 * (2 * log_std_old).exp()) - 0.5).sum(-1)
""",
    ),
    "final-obs-stats": (
        "trpo.py",
        "the observation statistics as Stable-Baselines3's VecNormalize keeps them: the final observation "
        "of an episode is normalised but not counted (the next episode's first one is); the script, like "
        "gymnasium's NormalizeObservation, counts both",
        """    def observation(self, observation):
        if self.update_running_mean:
            update_with_one(self.obs_rms, observation)
""",
        """    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        counting = self.update_running_mean
        self.update_running_mean = counting and not (terminated or truncated)
        try:
            return self.observation(obs), reward, terminated, truncated, info
        finally:
            self.update_running_mean = counting

    def observation(self, observation):
        if self.update_running_mean:
            update_with_one(self.obs_rms, observation)
""",
    ),
    "critic-mse": (
        "trpo.py",
        "the critic's loss as sb3-contrib's TRPO writes it, the mean squared error without the ½: twice the "
        "gradient, which Adam undoes except through its ε (1e-5), where gradients are that small",
        """    return 0.5 * ((values - returns) ** 2).mean()
""",
        """    return ((values - returns) ** 2).mean()
""",
    ),
    "critic-eps": (
        "trpo.py",
        "the critic's Adam with ε = 1e-8 (torch's default) in place of 1e-5: a candidate fix if critic-mse "
        "matters, since a loss twice as large is the same as ε / 2 (benchmark/adam_eps.py), and the "
        "critic's gradients on normalised rewards are some 1e-5 to 1e-4",
        """lr=args.learning_rate, eps=1e-5,
""",
        """lr=args.learning_rate, eps=1e-8,
""",
    ),
}


class UsageError(Exception):
    """Reported in one line, exit status 2."""


def ablated_source(name: str, script: str) -> str:
    """The script's source with the ablation's text replaced."""
    if name not in ABLATIONS:
        raise UsageError(f"no ablation {name!r}; there are: {', '.join(ABLATIONS)}")
    wanted, _, old, new = ABLATIONS[name]
    if os.path.basename(script) != wanted:
        raise UsageError(f"ablation {name!r} changes {wanted}, not {script}")
    with open(script) as f:
        source = f.read()
    found = source.count(old)
    if found != 1:
        raise UsageError(f"ablation {name!r}: the text it replaces occurs {found} times in {script}, not once "
                         f"(the script changed since the ablation was written)")
    return source.replace(old, new)


def run(name: str, script: str, flags: list[str]) -> None:
    """Run the ablated script as __main__ with its flags, as `python <script> <flags>` would."""
    path = os.path.abspath(script if os.path.exists(script) else os.path.join(ROOT, script))
    if not os.path.exists(path):
        raise UsageError(f"no script {script}")
    code = compile(ablated_source(name, path), path, "exec")
    print(f"ablation {name}: {ABLATIONS[name][1]}", flush=True)
    module = types.ModuleType("__main__")
    module.__file__ = path
    sys.modules["__main__"] = module  # what pickle and multiprocessing look up for the script's classes
    sys.argv = [path, *flags]
    sys.path[0] = os.path.dirname(path)
    exec(code, module.__dict__)


if __name__ == "__main__":
    arguments = sys.argv[1:]
    if not arguments or arguments[0] in ("-h", "--help", "--list"):
        print(__doc__.strip() + "\n\nablations:")
        for ablation, (script_name, what, _, _) in ABLATIONS.items():
            print(f"  {ablation} ({script_name}): {what}")
        sys.exit(0 if arguments else 2)
    try:
        if len(arguments) < 2:
            raise UsageError("usage: ablate.py <ablation> <script> [the script's flags]")
        run(arguments[0], arguments[1], arguments[2:])
    except UsageError as error:
        print(f"ablate.py: error: {error}", file=sys.stderr)
        sys.exit(2)
