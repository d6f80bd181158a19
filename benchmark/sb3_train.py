"""Train the Stable-Baselines3 counterpart of one of our runs, with the same hyperparameters.

Two uses. For benchmark/speed.py, it reads a run's summary.json (its "args" are the run's full
settings) and trains SB3's PPO, A2C, DDPG or TD3, or sb3-contrib's TRPO, on the same env, seed, budget and
settings: the same network (two 64-unit tanh
layers, separate actor and critic, orthogonal init; ddpg.py's: see make_ddpg), envs x steps per update, minibatches, epochs,
learning rate and its annealing, γ, λ, clipping, advantage and observation/reward normalisation, CG
and line-search settings. Torch gets one thread, as our scripts have by default. Writes the numbers
benchmark/speed.py compares, timed the way our scripts time themselves (training loop only):

    python benchmark/sb3_train.py --summary runs/.../summary.json --out sb3.json

For benchmark/run.py --versus-sb3, it is a job of its own: `--as <script>` followed by that script's
flags trains SB3 with the settings the script would run with (its defaults where no flag is given) and
leaves what our runs leave, in a folder under --runs-dir: a progress line every 5 seconds, each training
episode's return in tensorboard (charts/episodic_return, at the env step it ended; SB3's own metrics,
train/std, train/kl_divergence_loss and the rest, go to tensorboard in sb3_logs/ below it), an
evaluation of --eval-episodes episodes with the mean action (observations normalised by the frozen statistics, seeds from seed + 10,000, as ours), and
summary.json. Ctrl-C or SIGTERM stops it at the next env step and saves the model, VecNormalize's
statistics and its own counters; `--resume <folder>/sb3_model.zip` goes on from there. The rollout under
way when it stopped is lost (its steps count, no update used them): one rollout per interruption.

    python benchmark/sb3_train.py --as trpo --env-id Hopper-v5 --seed 1 --total-timesteps 1000000 --runs-dir runs
    python benchmark/sb3_train.py --resume runs/Hopper-v5__trpo_sb3__1__1796216318/sb3_model.zip

sb3-contrib's TRPO takes the mean of a Gaussian policy's KL over the d action dimensions where ours
sums them (the KL of the joint distribution): given ours max_kl δ it would allow d times our KL per
step, with d times our damping, so it gets δ / d and damping / d, which make its step ours (found for
issue 23: before, on Hopper-v5, SB3 took steps of 3 times our KL at "the same settings").
Differences that remain: sb3-contrib's TRPO bounds KL(π_new‖π_old) where ours bounds KL(π_old‖π_new);
ppo.py uses torch's fused Adam; SB3's timed window also holds its set-up (the first env reset). Settings
SB3 cannot reproduce (--clip-vloss, a2c's --value-loss huber, trpo's --no-line-search) are refused.

benchmark/speed.py --peers and benchmark/run.py --versus-sb3 run it; it is not meant to be run alone.
"""

import collections
import dataclasses
import importlib
import json
import math
import os
import signal
import sys
import time
from dataclasses import dataclass
from typing import Optional

import gymnasium
import numpy as np
import torch
import tyro
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEERS = {"ppo": "stable-baselines3 PPO", "ppo_continuous": "stable-baselines3 PPO", "a2c": "stable-baselines3 A2C",
         "trpo": "sb3-contrib TRPO", "ddpg": "stable-baselines3 DDPG or TD3"}


def peer_name(script: str, args: dict) -> str:
    """SB3's model that a run of ours is compared with; for ddpg.py, DDPG or TD3 as its switches say."""
    if script != "ddpg":
        return PEERS[script]
    td3 = args["twin_q"] or args["policy_frequency"] > 1 or args["target_noise"] > 0
    return "stable-baselines3 TD3" if td3 else "stable-baselines3 DDPG"


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
    if args.get("objective", "clip") != "clip":
        raise UsageError(f"--objective {args['objective']}: SB3's PPO has the clipped objective alone")
    if args.get("clip_vloss"):
        raise UsageError("--clip-vloss: SB3's clip_range_vf is not the same value clipping (it has no max of both)")
    if args.get("value_loss") == "huber":
        raise UsageError("--value-loss huber: SB3's A2C has only the squared error")
    if script == "trpo" and not args.get("line_search"):
        raise UsageError("--no-line-search: sb3-contrib's TRPO always checks its step")


def make_ddpg(args: dict, env):
    """SB3's TD3 with ddpg.py's switches, which is SB3's DDPG with them off (its DDPG class is TD3 with
    one critic, no delay and no target noise): the same 256-256 ReLU networks with torch's default init,
    one Adam rate for both, one update per env step after learning_starts random ones, τ, and the
    exploration noise in the [-1, 1] action space, as ours (OU with dt 1, ours: x ← x - θx + σε)."""
    from stable_baselines3 import TD3
    from stable_baselines3.common.noise import NormalActionNoise, OrnsteinUhlenbeckActionNoise
    d = env.action_space.shape[0]
    sigma = args["exploration_noise"] * np.ones(d)
    noise = (OrnsteinUhlenbeckActionNoise(np.zeros(d), sigma, theta=args["ou_theta"], dt=1.0) if args["noise"] == "ou"
             else NormalActionNoise(np.zeros(d), sigma))
    return TD3("MlpPolicy", env, learning_rate=args["learning_rate"], buffer_size=args["buffer_size"],
               learning_starts=args["learning_starts"], batch_size=args["batch_size"], tau=args["tau"],
               gamma=args["gamma"], train_freq=1, gradient_steps=1, action_noise=noise,
               policy_delay=args["policy_frequency"], target_policy_noise=args["target_noise"],
               target_noise_clip=args["target_noise_clip"], seed=args["seed"], device="cpu", verbose=0,
               policy_kwargs=dict(net_arch=[args["hidden_size"]] * 2, n_critics=2 if args["twin_q"] else 1))


def make_model(script: str, args: dict, env):
    """SB3's model with our run's settings. Our value loss is ½ (V - R)² and SB3's (V - R)², so SB3's
    vf_coef is half ours; SB3 stops an epoch at 1.5 target_kl, so it gets ours / 1.5; sb3-contrib's
    TRPO averages a Gaussian's KL over the action dimensions, so it gets max_kl / d and cg_damping / d."""
    from stable_baselines3 import A2C, PPO
    check_matchable(script, args)
    if script == "ddpg":
        return make_ddpg(args, env)
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
        # sb3-contrib's KL of a Gaussian policy is the mean over the action's d dimensions where ours sums
        # them: its bound and its Fisher matrix are ours divided by d. δ / d and damping / d give our step.
        d = env.action_space.shape[0] if isinstance(env.action_space, gymnasium.spaces.Box) else 1
        return TRPO(**common, learning_rate=args["learning_rate"], batch_size=batch // args["num_minibatches"],
                    n_critic_updates=args["critic_epochs"], cg_max_steps=args["cg_iters"],
                    cg_damping=args["cg_damping"] / d, line_search_shrinking_factor=args["backtrack_coef"],
                    line_search_max_iter=args["backtrack_iters"], normalize_advantage=args["norm_adv"],
                    target_kl=args["max_kl"] / d)
    raise UsageError(f"no SB3 counterpart for {script}.py")


def make_env(env_id: str, run_args: dict):
    """Our run's envs as SB3 has them: vectorised, each with a Monitor (raw episode returns), and with
    VecNormalize when our run normalises (both clip at 10, as gymnasium's wrappers in ours do not)."""
    env = make_vec_env(env_id, n_envs=run_args.get("num_envs", 1), seed=run_args["seed"], vec_env_cls=DummyVecEnv)
    if run_args.get("norm_obs") or run_args.get("norm_reward"):
        env = VecNormalize(env, norm_obs=run_args.get("norm_obs", False), norm_reward=run_args.get("norm_reward", False),
                           clip_obs=10.0, clip_reward=10.0, gamma=run_args["gamma"], epsilon=1e-8)
    return env


class Episodes(BaseCallback):
    """Episode returns as the Monitor wrapper records them (raw): the last 20, each one to tensorboard if
    given a writer, and the first step (and second of training) at which the mean of the last 20
    reached the threshold, checked as ours is, when an episode ends. Stops learning at the next env step
    once `stop` is set (by a signal). Given the budget (`total`), prints a progress line every 5 seconds,
    as our scripts do."""

    def __init__(self, threshold: Optional[float], writer=None, state: Optional[dict] = None,
                 total: Optional[int] = None):
        super().__init__()
        state = state or {}
        self.threshold, self.writer, self.stop, self.total = threshold, writer, False, total
        self.first_step: Optional[int] = None  # this session's, for its steps/s
        self.last_print = time.perf_counter()
        self.returns = collections.deque(state.get("returns", []), maxlen=20)
        self.steps: Optional[int] = state.get("steps_to_threshold")
        self.seconds: Optional[float] = state.get("seconds_to_threshold")
        self.seconds_before = state.get("training_seconds", 0.0)  # in earlier sessions of a resumed run
        self.start = time.perf_counter()

    def training_seconds(self) -> float:
        return self.seconds_before + time.perf_counter() - self.start

    def _on_step(self) -> bool:
        ended = [float(info["episode"]["r"]) for info in self.locals["infos"] if "episode" in info]
        for episodic_return in ended:
            self.returns.append(episodic_return)
            if self.writer is not None:
                self.writer.add_scalar("charts/episodic_return", episodic_return, self.num_timesteps)
        if (ended and self.steps is None and self.threshold is not None and len(self.returns) == self.returns.maxlen
                and np.mean(self.returns) >= self.threshold):
            self.steps, self.seconds = self.num_timesteps, self.training_seconds()
        now = time.perf_counter()
        if self.first_step is None:
            self.first_step = self.num_timesteps
        if self.total and (now - self.last_print >= 5.0 or self.num_timesteps >= self.total):
            self.last_print = now
            sps = (self.num_timesteps - self.first_step) / max(now - self.start, 1e-9)
            recent = f"{np.mean(self.returns):8.1f}" if self.returns else "     n/a"
            eta = int(max(self.total - self.num_timesteps, 0) / max(sps, 1e-9))
            eta_text = f"{eta // 3600}h{eta % 3600 // 60:02d}m" if eta >= 3600 else f"{eta // 60}m{eta % 60:02d}s"
            print(f"step {self.num_timesteps:>9,} ({100 * min(self.num_timesteps / self.total, 1):3.0f}%) | return "
                  f"{recent} (last {len(self.returns)}) | {sps:7,.0f} steps/s | ETA {eta_text}", flush=True)
        return not self.stop

    def state(self) -> dict:
        return {"returns": list(self.returns), "steps_to_threshold": self.steps, "seconds_to_threshold": self.seconds,
                "training_seconds": self.training_seconds()}


def main(args: Args) -> None:
    """speed.py's comparison: train for the budget and write the numbers it compares."""
    with open(args.summary) as f:
        ours = json.load(f)
    script, run_args, threshold = ours["algorithm"], ours["args"], ours["reward_threshold"]
    torch.set_num_threads(run_args["torch_threads"])
    env = make_env(ours["env_id"], run_args)
    model = make_model(script, run_args, env)
    callback = Episodes(threshold)
    model.learn(total_timesteps=run_args["total_timesteps"], callback=callback)
    seconds = callback.training_seconds()
    result = {"peer": peer_name(script, run_args), "global_step": model.num_timesteps,
              "steps_to_threshold": callback.steps, "seconds_to_threshold": callback.seconds,
              "sps": model.num_timesteps / seconds, "wall_seconds": seconds,
              "final_return": float(np.mean(callback.returns)) if callback.returns else None}
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)


# ------------------------------------------------------------------------- a job of benchmark/run.py
def script_args(script: str, flags: list[str]) -> dict:
    """The settings `python <script>.py <flags>` runs with: the script's Args, parsed from the flags."""
    if script not in PEERS:
        raise UsageError(f"no SB3 counterpart for {script}.py; there is one for {', '.join(PEERS)}")
    sys.path.insert(0, ROOT)
    return dataclasses.asdict(tyro.cli(importlib.import_module(script).Args, args=flags))


def evaluate(model, env_id: str, episodes: int, seed: int, obs_rms, greedy: bool = True) -> list[float]:
    """Returns of `episodes` episodes with the mean (or greedy) action, or sampled ones if not greedy;
    observations normalised by the frozen obs_rms as VecNormalize does (clipped at 10); the episodes
    after the first reset without a seed, as ours."""
    env, returns = gymnasium.make(env_id), []
    obs, _ = env.reset(seed=seed)
    for _ in range(episodes):
        done, episodic_return = False, 0.0
        while not done:
            if obs_rms is not None:
                obs = np.clip((obs - obs_rms.mean) / np.sqrt(obs_rms.var + 1e-8), -10.0, 10.0)
            action, _ = model.predict(obs, deterministic=greedy)
            obs, reward, terminated, truncated, _ = env.step(action)
            episodic_return += float(reward)
            done = terminated or truncated
        returns.append(episodic_return)
        obs, _ = env.reset()
    env.close()
    return returns


def train_job(script: str, run_args: dict, resume: Optional[str] = None) -> int:
    """Train SB3 for the run's budget in a run folder of its own, resuming from `resume` if given;
    write summary.json. Exit status 0, or 130 if a signal stopped it (its checkpoint saved)."""
    from stable_baselines3 import A2C, PPO
    from torch.utils.tensorboard import SummaryWriter

    env_id, seed = run_args["env_id"], run_args["seed"]
    torch.set_num_threads(run_args["torch_threads"])
    if resume:
        folder = os.path.dirname(os.path.abspath(resume))
        with open(os.path.join(folder, "sb3_state.json")) as f:
            state = json.load(f)
        env = make_env(env_id, run_args)
        if isinstance(env, VecNormalize):
            env = VecNormalize.load(os.path.join(folder, "vecnormalize.pkl"), env.venv)
        if script == "trpo":
            from sb3_contrib import TRPO as Model
        elif script == "ddpg":
            from stable_baselines3 import TD3 as Model
        else:
            Model = PPO if script in ("ppo", "ppo_continuous") else A2C
        model = Model.load(resume, env=env, device="cpu")
    else:
        safe_id = env_id.replace("/", "_").replace(":", "_")  # as our scripts name their run folders
        folder = os.path.join(os.path.abspath(run_args["runs_dir"]), f"{safe_id}__{script}_sb3__{seed}__{int(time.time())}")
        os.makedirs(folder)
        state, env = {}, make_env(env_id, run_args)
        model = make_model(script, run_args, env)
    callback = Episodes(gym_threshold(env_id), state=state, total=run_args["total_timesteps"])

    def stop(signum, frame):
        callback.stop = True
    signal.signal(signal.SIGINT, stop)  # before the events file appears, which tells a watcher it has begun
    signal.signal(signal.SIGTERM, stop)
    writer = callback.writer = SummaryWriter(folder)
    from stable_baselines3.common.logger import configure
    model.set_logger(configure(os.path.join(folder, "sb3_logs"), ["tensorboard"]))  # its own train/... metrics
    print(f"SB3 counterpart of {script}.py on {env_id}, seed {seed}: logging to {folder}", flush=True)
    steps_before, session_start = model.num_timesteps, time.perf_counter()
    model.learn(total_timesteps=run_args["total_timesteps"] - model.num_timesteps, callback=callback,
                reset_num_timesteps=not resume)
    seconds, session_seconds = callback.training_seconds(), time.perf_counter() - session_start
    writer.close()
    interrupted = callback.stop and model.num_timesteps < run_args["total_timesteps"]
    checkpoint = os.path.join(folder, "sb3_model.zip")
    model.save(checkpoint)
    if isinstance(env, VecNormalize):
        env.save(os.path.join(folder, "vecnormalize.pkl"))
    with open(os.path.join(folder, "sb3_state.json"), "w") as f:
        json.dump({**callback.state(), "training_seconds": seconds}, f)
    evaluation = [] if interrupted else evaluate(
        model, env_id, run_args["eval_episodes"], seed + 10_000,
        env.obs_rms if isinstance(env, VecNormalize) and env.norm_obs else None, run_args["eval_greedy"])
    summary = {"algorithm": script, "peer": peer_name(script, run_args), "env_id": env_id, "seed": seed,
               "global_step": model.num_timesteps, "wall_seconds": seconds,
               "sps": (model.num_timesteps - steps_before) / session_seconds,  # this session's, as ours
               "final_return": float(np.mean(callback.returns)) if callback.returns else None,
               "eval_return": float(np.mean(evaluation)) if evaluation else None,
               "eval_return_std": float(np.std(evaluation)) if evaluation else None,
               "eval_mode": "greedy" if run_args["eval_greedy"] else "sampled",
               "reward_threshold": callback.threshold, "steps_to_threshold": callback.steps,
               "seconds_to_threshold": callback.seconds, "interrupted": interrupted, "failed": False,
               "checkpoint": checkpoint, "run_dir": folder, "args": run_args}
    with open(os.path.join(folder, "summary.json.tmp"), "w") as f:
        json.dump(summary, f, indent=2)
    os.replace(os.path.join(folder, "summary.json.tmp"), os.path.join(folder, "summary.json"))  # whole or not at all
    final = "no episode finished" if summary["final_return"] is None else f"{summary['final_return']:.1f}"
    if interrupted:
        print(f"interrupted at step {model.num_timesteps:,}; resume with --resume {checkpoint}", flush=True)
        return 130
    print(f"eval: mean return {summary['eval_return']:.1f} ± {summary['eval_return_std']:.1f} over "
          f"{len(evaluation)} mean-action episodes (training: {final}, {seconds:.1f}s)", flush=True)
    return 0


def gym_threshold(env_id: str) -> Optional[float]:
    try:
        return gymnasium.spec(env_id).reward_threshold  # "module:Env-v0" imports the module
    except gymnasium.error.Error:
        return None


def job_main(argv: list[str]) -> int:
    """`--as <script> <its flags>` or `--resume <checkpoint>`."""
    if argv[0] == "--resume":
        if len(argv) != 2 or not os.path.exists(argv[1]):
            raise UsageError(f"--resume needs one checkpoint file that exists, got {' '.join(argv[1:]) or 'none'}")
        with open(os.path.join(os.path.dirname(os.path.abspath(argv[1])), "summary.json")) as f:
            summary = json.load(f)
        return train_job(summary["algorithm"], summary["args"], resume=argv[1])
    if len(argv) < 2:
        raise UsageError(f"--as needs a script name ({', '.join(PEERS)}), then its flags")
    script = argv[1]
    run_args = script_args(script, argv[2:])
    check_matchable(script, run_args)
    return train_job(script, run_args)


if __name__ == "__main__":
    try:
        if len(sys.argv) > 1 and sys.argv[1] in ("--as", "--resume"):
            sys.exit(job_main(sys.argv[1:]))
        main(tyro.cli(Args))
    except UsageError as error:
        print(f"sb3_train.py: error: {error}", file=sys.stderr)
        sys.exit(2)
