"""Proximal Policy Optimization (PPO) with the clipped surrogate objective, discrete actions.

The idea this file adds to a2c.py: reuse each batch of experience for several epochs of
minibatch updates, and keep every update close to the policy that collected the data by
clipping the probability ratio.

    r_t(θ)      = π_θ(a_t | s_t) / π_θold(a_t | s_t)                        probability ratio
    L^CLIP(θ)   = E_t[ min( r_t(θ) Â_t,  clip(r_t(θ), 1 - ε, 1 + ε) Â_t ) ]    clipped surrogate
    L(θ)        = -L^CLIP(θ) + c_v · ½ E_t[(V_θ(s_t) - R̂_t)²] - c_e · E_t[H(π_θ(·|s_t))]

The minimum makes the objective a pessimistic bound: a change of the ratio beyond 1 ± ε earns
nothing when it would improve the objective, but is still paid for when it makes it worse.

Advantages come from generalised advantage estimation (GAE):

    δ_t = r_t + γ (1 - term_t) V(s_{t+1}) - V(s_t)                         TD error
    Â_t = δ_t + γ λ (1 - done_t) Â_{t+1}                                    GAE(λ)
    R̂_t = Â_t + V(s_t)                                                     value target

s_{t+1} is the true successor state. When an episode ends at t, the vector env has already
reset, so s_{t+1} is the final observation it reports. A time-limit truncation is not a real
end: its return is bootstrapped from V(s_{t+1}). Only a true termination cuts it (term_t = 1).
done_t = term_t or trunc_t stops the recursion from running into the next episode.

Defaults: 8 envs x 32 steps, 4 minibatches, 8 epochs, lr 2e-3 decaying linearly over 100k steps,
γ 0.98, λ 0.8 (the last two from rl-baselines3-zoo's CartPole settings). Over 6 seeds they reached
a mean return of 475 on CartPole-v1 at a median of 19k steps and -100 on Acrobot-v1 at a median
of 8k, every seed. The common Atari-derived defaults (4 envs x 128 steps, lr 2.5e-4, 4 epochs,
γ 0.99, λ 0.95, entropy 0.01) reached 475 on 4 of 6 seeds within 150k steps (median 94k) and -100
on 5 of 6 within 100k (median 79k). Measured with
`python benchmark/sweep.py --configs benchmark/configs/ppo_defaults.json --seeds 1 2 3 4 5 6`,
raw results in benchmark/results/tuning/ppo_defaults.json. Harder envs need their own settings.

References:
    Schulman, Wolski, Dhariwal, Radford, Klimov (2017). Proximal Policy Optimization
        Algorithms. arXiv:1707.06347
    Schulman, Moritz, Levine, Jordan, Abbeel (2016). High-Dimensional Continuous Control
        Using Generalized Advantage Estimation. arXiv:1506.02438

Example:
    python ppo.py --env-id CartPole-v1 --seed 1
    python ppo.py --eval-checkpoint runs/<run>/ppo.pt
"""

import collections
import gc
import importlib
import itertools
import json
import math
import os
import random
import signal
import sys
import time
from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import gymnasium as gym
import tyro
from torch.utils.tensorboard import SummaryWriter


@dataclass
class Args:
    # --- experiment -------------------------------------------------------------------------
    exp_name: str = "ppo"
    """name of the experiment: it names the run directory and the checkpoint file"""
    env_id: str = "CartPole-v1"
    """gymnasium env id, also `module:EnvName-v0` for an env your own module registers, or
    `module:ClassName` for a gymnasium.Env subclass in your module"""
    seed: int = 1
    """seed of python, numpy, torch and the envs"""
    total_timesteps: int = 100_000
    """env steps to train for, over all envs (rounded up to a whole number of rollouts)"""
    torch_deterministic: bool = True
    """make torch use deterministic algorithms"""
    cuda: bool = True
    """use CUDA when it is available"""
    torch_threads: int = 1
    """CPU threads for torch; one is fastest for networks this small"""
    runs_dir: str = "runs"
    """where run directories are created"""
    track: bool = False
    """log to Weights & Biases as well (needs `pip install wandb`)"""
    wandb_project_name: str = "policy-gradients"
    """the wandb project, with --track"""
    wandb_entity: Optional[str] = None
    """the wandb team or user, with --track"""
    capture_video: bool = False
    """record videos of the first env's episodes into the run's videos/ (needs moviepy)"""
    save_model: bool = True
    """save a checkpoint at the end of training and on Ctrl-C"""
    resume: Optional[str] = None
    """checkpoint to continue training from, up to --total-timesteps"""
    eval_checkpoint: Optional[str] = None
    """evaluate this checkpoint with greedy actions instead of training"""
    eval_episodes: int = 10
    """greedy episodes run after training, or with --eval-checkpoint"""

    # --- algorithm --------------------------------------------------------------------------
    learning_rate: float = 2e-3
    """Adam step size"""
    anneal_lr: bool = True
    """decay the learning rate linearly over the run, to lr / (number of updates) at the last"""
    num_envs: int = 8
    """parallel envs in the vector env"""
    num_steps: int = 32
    """steps per env in each rollout; a rollout is num_envs * num_steps transitions"""
    gamma: float = 0.98
    """discount factor γ"""
    gae_lambda: float = 0.8
    """GAE λ: 0 gives one-step TD errors, 1 Monte-Carlo returns minus V"""
    num_minibatches: int = 4
    """minibatches each rollout is split into"""
    update_epochs: int = 8
    """passes over each rollout"""
    norm_adv: bool = True
    """normalise advantages to zero mean and unit std within each minibatch"""
    clip_coef: float = 0.2
    """ε of the clipped surrogate"""
    clip_vloss: bool = False
    """clip the value update to ±clip_coef around the old value as well"""
    ent_coef: float = 0.0
    """weight c_e of the entropy bonus"""
    vf_coef: float = 0.5
    """weight c_v of the value loss"""
    max_grad_norm: float = 0.5
    """clip the global gradient norm to this"""
    target_kl: Optional[float] = None
    """stop the update's epochs early once a minibatch's approximate KL exceeds this"""


class UsageError(Exception):
    """A mistake in the flags or the env: reported as one line on stderr, exit status 2."""


# ----------------------------------------------------------------------------- environment
def resolve_env_id(env_id: str) -> str:
    """Return an id gymnasium.make accepts; raise UsageError if there is none.

    `module:EnvName-v0` is gymnasium's own form: importing the module registers the env. As a
    convenience, `module:ClassName` naming a gymnasium.Env subclass is registered on the fly.
    """
    module_name, _, name = env_id.rpartition(":")
    try:
        if module_name:
            env_class = getattr(importlib.import_module(module_name), name, None)
            if name not in gym.registry and isinstance(env_class, type) and issubclass(env_class, gym.Env):
                gym.register(id=name, entry_point=env_class)
        gym.spec(name)  # raises, with gymnasium's "did you mean", for an unknown id
    except ImportError as e:
        raise UsageError(f"cannot import the module of --env-id {env_id}: {e}") from None
    except gym.error.Error as e:
        raise UsageError(str(e)) from None
    return name


def check_spaces(env: gym.Env) -> tuple[int, int]:
    """Return (observation size, number of actions); raise UsageError if ppo.py cannot use them."""
    name = env.spec.id if env.spec else type(env).__name__
    if isinstance(env.action_space, gym.spaces.Box):
        raise UsageError(f"{name} has continuous actions; ppo.py needs a discrete action space, "
                         "use ppo_continuous.py")
    if not isinstance(env.action_space, gym.spaces.Discrete):
        raise UsageError(f"{name} has a {type(env.action_space).__name__} action space; "
                         "ppo.py needs a Discrete one")
    obs_space = env.observation_space
    if not (isinstance(obs_space, gym.spaces.Box) and len(obs_space.shape) == 1):
        raise UsageError(f"{name} has observation space {obs_space}; ppo.py needs a flat Box "
                         "(vector) observation: flatten it with a wrapper first")
    return obs_space.shape[0], int(env.action_space.n)


def successor_obs(next_obs: np.ndarray, info: dict) -> np.ndarray:
    """The true s_{t+1} of each env. Where an episode just ended, the vector env has already
    reset and returned the next episode's first observation; the final one is in info."""
    if "_final_obs" not in info:
        return next_obs
    successor = next_obs.copy()
    for i in np.flatnonzero(info["_final_obs"]):
        successor[i] = info["final_obs"][i]
    return successor


def make_env(env_id: str, capture_video: bool = False, video_dir: str = ""):
    """A thunk building one env that records its episodes' statistics; with capture_video, it
    records videos of them to video_dir."""
    def thunk():
        if capture_video:
            env = gym.make(env_id, render_mode="rgb_array")
            env = gym.wrappers.RecordVideo(env, video_dir, disable_logger=True)
        else:
            env = gym.make(env_id)
        return gym.wrappers.RecordEpisodeStatistics(env)
    return thunk


def make_vec_env(env_id: str, num_envs: int, capture_video: bool, video_dir: str) -> gym.vector.VectorEnv:
    """num_envs copies in one process, autoreset in the same step (so final_obs is at hand). An
    episode's statistics arrive in info["final_info"]."""
    thunks = [make_env(env_id, capture_video and i == 0, video_dir) for i in range(num_envs)]
    return gym.vector.SyncVectorEnv(thunks, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)


# --------------------------------------------------------------------------------- networks
def layer_init(layer: nn.Linear, std: float = math.sqrt(2), bias: float = 0.0) -> nn.Linear:
    """Orthogonal weights with gain std, constant bias."""
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias)
    return layer


def mlp(in_dim: int, out_dim: int, out_std: float, hidden: int = 64) -> nn.Sequential:
    return nn.Sequential(
        layer_init(nn.Linear(in_dim, hidden)), nn.Tanh(),
        layer_init(nn.Linear(hidden, hidden)), nn.Tanh(),
        layer_init(nn.Linear(hidden, out_dim), std=out_std),
    )


class Agent(nn.Module):
    """Separate actor π_θ(a|s) (logits) and critic V(s) networks, 64-64 tanh each."""

    def __init__(self, obs_dim: int, num_actions: int):
        super().__init__()
        self.critic = mlp(obs_dim, 1, out_std=1.0)
        # A small last layer starts the policy near uniform, so early updates are gentle.
        self.actor = mlp(obs_dim, num_actions, out_std=0.01)

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.critic(obs).squeeze(-1)

    def logprob_entropy(self, obs: torch.Tensor, actions: torch.Tensor):
        """log π_θ(a|s) of the given actions, and the entropy H = -Σ_a π(a|s) log π(a|s)."""
        log_probs = self.actor(obs).log_softmax(-1)  # log π_θ(·|s), normalised logits
        logprob = log_probs.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
        entropy = -(log_probs.exp() * log_probs).sum(-1)
        return logprob, entropy

    def sample_action(self, obs: torch.Tensor) -> torch.Tensor:
        """a ~ π_θ(·|s), for acting in the env."""
        return torch.multinomial(self.actor(obs).softmax(-1), 1).squeeze(-1)

    def greedy_action(self, obs: torch.Tensor) -> torch.Tensor:
        return self.actor(obs).argmax(-1)


# --------------------------------------------------------------- the math, and the update
def compute_gae(rewards, values, next_values, terminations, truncations, gamma: float, lam: float):
    """Generalised advantage estimates Â_t for a rollout of shape (T,) or (T, num_envs).

    next_values[t] is V(s_{t+1}) of the true successor state: at an episode's end, the value of
    its final observation. A termination zeroes it; a truncation keeps it (bootstraps the
    return the time limit cut off). Either one stops the recursion at the episode boundary.
    """
    not_terminated = 1.0 - terminations.float()
    not_done = 1.0 - torch.maximum(terminations.float(), truncations.float())
    deltas = rewards + gamma * not_terminated * next_values - values  # δ_t
    advantages = torch.zeros_like(deltas)
    next_advantage = torch.zeros_like(deltas[0])
    for t in reversed(range(len(deltas))):
        next_advantage = deltas[t] + gamma * lam * not_done[t] * next_advantage  # Â_t = δ_t + γλ(1-done_t) Â_{t+1}
        advantages[t] = next_advantage
    return advantages


def clipped_policy_loss(new_logprob, old_logprob, advantages, clip_coef: float):
    """-L^CLIP, plus diagnostics: (loss, approx_kl, clipfrac).

    approx_kl is the k3 estimator E[(r - 1) - log r] of KL(π_old ‖ π_θ): unbiased and never
    negative. clipfrac is the fraction of samples whose ratio the clip touched.
    """
    log_ratio = new_logprob - old_logprob
    ratio = log_ratio.exp()  # r_t(θ)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1 - clip_coef, 1 + clip_coef) * advantages
    loss = -torch.min(unclipped, clipped).mean()  # -E[min(r Â, clip(r, 1-ε, 1+ε) Â)]
    with torch.no_grad():
        approx_kl = ((ratio - 1) - log_ratio).mean()
        clipfrac = ((ratio - 1).abs() > clip_coef).float().mean()
    return loss, approx_kl, clipfrac


def value_loss(new_value, old_value, returns, clip_coef: Optional[float]):
    """½ E[(V_θ(s) - R̂)²]; with clip_coef, the pessimistic max with the clipped value's error."""
    loss = (new_value - returns) ** 2
    if clip_coef is not None:
        clipped_value = old_value + torch.clamp(new_value - old_value, -clip_coef, clip_coef)
        loss = torch.max(loss, (clipped_value - returns) ** 2)
    return 0.5 * loss.mean()


def explained_variance(predicted: torch.Tensor, target: torch.Tensor) -> float:
    """1 - Var(target - predicted) / Var(target): 1 is a perfect critic, 0 no better than a constant."""
    var_target = target.var()
    return float("nan") if var_target == 0 else float(1 - (target - predicted).var() / var_target)


def ppo_update(agent: Agent, optimizer: torch.optim.Optimizer, batch: dict, args: Args,
               world_size: int = 1) -> dict:
    """Several epochs of minibatch steps on the rollout in `batch` (flat tensors).

    Returns the losses averaged over the minibatches of the last epoch that took a step. With
    --target-kl, the update stops before the first minibatch whose policy has drifted further.
    With several processes, `batch` is this rank's share, and every minibatch's gradient, losses
    and KL are averaged over the ranks: the values for the whole minibatch, the same on every rank.
    """
    batch_size = len(batch["obs"])
    minibatch_size = batch_size // args.num_minibatches
    params = [p for group in optimizer.param_groups for p in group["params"]]
    last_epoch_stats, epochs, stopped_early = [], 0, False
    for epoch in range(args.update_epochs):
        epoch_stats = []  # per minibatch: the loss and its parts, approx_kl, clipfrac
        permutation = torch.randperm(batch_size, device=batch["obs"].device)
        for start in range(0, batch_size, minibatch_size):
            mb = permutation[start:start + minibatch_size]
            new_logprob, entropy = agent.logprob_entropy(batch["obs"][mb], batch["actions"][mb])
            advantages = batch["advantages"][mb]
            if args.norm_adv:
                advantages = (advantages - advantages.mean()) / (advantages.std(correction=0) + 1e-8)
            pg_loss, approx_kl, clipfrac = clipped_policy_loss(
                new_logprob, batch["logprobs"][mb], advantages, args.clip_coef)
            if args.target_kl is not None:
                average_over_ranks_([approx_kl], world_size)  # so that all ranks stop at the same minibatch
                if approx_kl > args.target_kl:
                    stopped_early = True
                    break
            v_loss = value_loss(agent.value(batch["obs"][mb]), batch["values"][mb], batch["returns"][mb],
                                args.clip_coef if args.clip_vloss else None)
            entropy = entropy.mean()
            loss = pg_loss - args.ent_coef * entropy + args.vf_coef * v_loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            # approx_kl is already the mean over ranks with --target-kl; averaging it again changes nothing
            diagnostics = torch.stack([loss, pg_loss, v_loss, entropy, approx_kl, clipfrac]).detach()
            average_over_ranks_([diagnostics, *(p.grad for p in params)], world_size)
            if not torch.isfinite(diagnostics[0]):
                raise FloatingPointError(f"loss is {diagnostics[0].item()} (policy {diagnostics[1].item()}, "
                                         f"value {diagnostics[2].item()})")
            nn.utils.clip_grad_norm_(params, args.max_grad_norm)
            optimizer.step()
            epoch_stats.append(diagnostics)
        if epoch_stats:
            last_epoch_stats, epochs = epoch_stats, epochs + 1
        if stopped_early:
            break
    means = torch.stack(last_epoch_stats).mean(0).tolist() if last_epoch_stats else []
    keys = ("loss", "policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac")
    return {**dict(zip(keys, means)), "epochs": epochs, "stopped_early": stopped_early}


# ---------------------------------------------------------------------------------- helpers
def validate_args(args: Args, world_size: int = 1) -> None:
    """Raise UsageError for flag values that cannot work, before anything is built."""
    for name in ("total_timesteps", "num_envs", "num_steps", "num_minibatches", "update_epochs",
                 "eval_episodes", "torch_threads"):
        if getattr(args, name) <= 0:
            raise UsageError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if args.num_envs % world_size:
        raise UsageError(f"--num-envs {args.num_envs} does not split over {world_size} processes: pass a "
                         f"multiple of {world_size}")
    rank_batch_size = args.num_envs // world_size * args.num_steps
    if rank_batch_size % args.num_minibatches:
        share = f", {rank_batch_size} per process," if world_size > 1 else ""
        raise UsageError(f"the batch of --num-envs {args.num_envs} x --num-steps {args.num_steps} = "
                         f"{args.num_envs * args.num_steps}{share} does not split into --num-minibatches "
                         f"{args.num_minibatches}")
    for name in ("gamma", "gae_lambda"):
        if not 0.0 <= getattr(args, name) <= 1.0:
            raise UsageError(f"--{name.replace('_', '-')} must lie in [0, 1], got {getattr(args, name)}")
    for name in ("learning_rate", "clip_coef", "max_grad_norm"):
        if not getattr(args, name) > 0:
            raise UsageError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    for name in ("learning_rate", "gamma", "gae_lambda", "clip_coef", "ent_coef", "vf_coef", "max_grad_norm",
                 "target_kl"):
        if getattr(args, name) is not None and not math.isfinite(getattr(args, name)):
            raise UsageError(f"--{name.replace('_', '-')} must be a finite number, got {getattr(args, name)}")
    for name in ("ent_coef", "vf_coef"):
        if getattr(args, name) < 0:
            raise UsageError(f"--{name.replace('_', '-')} must not be negative, got {getattr(args, name)}")
    if args.target_kl is not None and args.target_kl <= 0:
        raise UsageError(f"--target-kl must be positive, got {args.target_kl}")
    if args.resume and args.eval_checkpoint:
        raise UsageError("give either --resume or --eval-checkpoint, not both")
    if args.capture_video:
        try:
            import moviepy  # noqa: F401
        except ImportError:
            raise UsageError("--capture-video needs moviepy: pip install moviepy") from None
    if args.track:
        try:
            import wandb  # noqa: F401
        except ImportError:
            raise UsageError("--track needs wandb: pip install wandb") from None


def check_setup(args: Args, local_rank: int = 0, world_size: int = 1
                ) -> tuple[str, int, int, Optional[float], torch.device]:
    """Validate flags and env, set torch's threads; return (env id for gymnasium.make,
    observation size, number of actions, the env's reward threshold or None, device)."""
    validate_args(args, world_size)
    env_id = resolve_env_id(args.env_id)
    probe = gym.make(env_id)
    obs_dim, num_actions = check_spaces(probe)
    threshold = probe.spec.reward_threshold if probe.spec else None
    probe.close()
    torch.set_num_threads(args.torch_threads)
    if not (args.cuda and torch.cuda.is_available()):
        return env_id, obs_dim, num_actions, threshold, torch.device("cpu")
    if int(os.environ.get("LOCAL_WORLD_SIZE", 1)) > torch.cuda.device_count():
        raise UsageError(f"{os.environ['LOCAL_WORLD_SIZE']} processes on this machine but "
                         f"{torch.cuda.device_count()} GPUs: start at most one per GPU, or pass --no-cuda")
    return env_id, obs_dim, num_actions, threshold, torch.device("cuda", local_rank)  # one GPU per process


def load_checkpoint(path: str, obs_dim: int, num_actions: int, device: torch.device) -> dict:
    """Load a checkpoint, checking that it exists and fits the env; raise UsageError otherwise."""
    if not os.path.isfile(path):
        raise UsageError(f"checkpoint {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location=device, weights_only=False)
        trained = (checkpoint["obs_dim"], checkpoint["num_actions"])
    except Exception as e:
        raise UsageError(f"{path} is not a ppo.py checkpoint ({type(e).__name__}: {e})") from None
    if trained != (obs_dim, num_actions):
        raise UsageError(f"checkpoint {path} was trained on {checkpoint['args']['env_id']} "
                         f"({trained[0]} observations, {trained[1]} actions), which does not match "
                         f"this env ({obs_dim}, {num_actions}); pass --env-id "
                         f"{checkpoint['args']['env_id']}")
    return checkpoint


def save_checkpoint(path: str, agent: Agent, optimizer, global_step: int, args: Args, stats: dict):
    torch.save({"agent": agent.state_dict(), "optimizer": optimizer.state_dict(),
                "global_step": global_step, "obs_dim": agent.actor[0].in_features,
                "num_actions": agent.actor[-1].out_features, "args": asdict(args), "stats": stats},
               path + ".tmp")
    os.replace(path + ".tmp", path)  # never leave a half-written checkpoint behind


def format_seconds(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


class StopOnSigint:
    """While active, the first Ctrl-C only asks the loop to stop (it saves a checkpoint at the
    end of the current update); a second Ctrl-C interrupts at once."""

    def __init__(self, announce: bool = True):
        self.announce = announce

    def __enter__(self):
        self.requested = False
        self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        if self.announce:
            print("\nCtrl-C: stopping after this update (again to abort without saving)", flush=True)

    def __exit__(self, *exc):
        signal.signal(signal.SIGINT, self.previous)


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # needed by CUDA for determinism
    torch.use_deterministic_algorithms(deterministic)
    torch.backends.cudnn.deterministic = deterministic


# ------------------------------------------------------------ several processes (torchrun)
# `torchrun --nproc-per-node N ppo.py ...` starts N copies of this script, the ranks 0 .. N-1.
# Each steps num_envs / N of the envs and computes the loss on its share of every minibatch. The
# mean of the ranks' gradients is the gradient of the loss over the whole minibatch: averaged by
# an all-reduce, it is the same on every rank, so each takes the same Adam step from the same
# parameters and they stay identical. Rank 0 alone logs, prints and saves. The flags mean what
# they mean in one process: --num-envs and the batch are totals over the ranks. One thing differs:
# --norm-adv normalises the advantages within each rank's share of a minibatch. Run as a single
# process, none of this does anything.
def torchrun_ranks() -> tuple[int, int, int]:
    """(rank, local rank on this machine, world size) as torchrun puts them in the environment;
    (0, 0, 1) for a single process. Raise UsageError for an environment torchrun did not set up."""
    if int(os.environ.get("WORLD_SIZE", 1)) == 1:
        return 0, 0, 1
    missing = [name for name in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") if name not in os.environ]
    if missing:
        raise UsageError(f"WORLD_SIZE is {os.environ['WORLD_SIZE']} but {', '.join(missing)} not set: start "
                         "several processes with torchrun (see README.md), or unset WORLD_SIZE to run one")
    return int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"]), int(os.environ["WORLD_SIZE"])


def join_process_group(rank: int, world_size: int, device: torch.device) -> None:
    """Meet the other ranks at MASTER_ADDR:MASTER_PORT: backend gloo on CPU, nccl on CUDA."""
    if device.type == "cuda":
        torch.cuda.set_device(device)
    try:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world_size)
    except (ValueError, dist.DistError) as e:
        raise UsageError(f"cannot join the other processes at {os.environ['MASTER_ADDR']}:"
                         f"{os.environ['MASTER_PORT']}: {str(e).splitlines()[0]}") from None


def average_over_ranks_(tensors: list[torch.Tensor], world_size: int) -> None:
    """Replace each tensor, in place, by its mean over the ranks: one all-reduce of them all."""
    if world_size == 1:
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)  # the sum over ranks, on every rank
    flat /= world_size
    for t, mean in zip(tensors, flat.split([t.numel() for t in tensors])):
        t.copy_(mean.view_as(t))


def gather_from_ranks(obj, world_size: int) -> list:
    """Every rank's obj, in rank order, on every rank; [obj] in a single process."""
    if world_size == 1:
        return [obj]
    gathered = [None] * world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def exit_process(status: int) -> None:
    """sys.exit(status); under torchrun, os._exit(status) once the output is flushed. Skipping the
    interpreter's shutdown there keeps it from meeting gloo's threads, which now and then aborted
    a rank at exit (SIGABRT, "terminate called without an active exception"): torchrun then
    reported a run that had ended well as failed."""
    if int(os.environ.get("WORLD_SIZE", 1)) > 1:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    sys.exit(status)


# ------------------------------------------------------------------------------------ train
def train(args: Args) -> Optional[dict]:
    """Train a PPO agent as `args` say; return the run summary (also written to summary.json), or
    None on the ranks other than 0 under torchrun."""
    rank, local_rank, world_size = torchrun_ranks()
    env_id, obs_dim, num_actions, threshold, device = check_setup(args, local_rank, world_size)
    checkpoint = load_checkpoint(args.resume, obs_dim, num_actions, device) if args.resume else None
    global_step = 0
    stats = {"recent_returns": [], "steps_to_threshold": None, "seconds_to_threshold": None,
             "wall_seconds": 0.0}
    if checkpoint is not None:
        global_step, stats = checkpoint["global_step"], checkpoint["stats"]
        if global_step >= args.total_timesteps:
            raise UsageError(f"checkpoint {args.resume} is already at step {global_step:,}; pass a larger "
                             "--total-timesteps to train on")
    if world_size > 1:
        join_process_group(rank, world_size, device)
    is_main = rank == 0

    seed_everything(args.seed + rank, args.torch_deterministic)  # each rank samples its own actions
    if checkpoint is None:
        safe_id = args.env_id.replace("/", "_").replace(":", "_")
        run_dir = os.path.join(args.runs_dir, f"{safe_id}__{args.exp_name}__{args.seed}__{int(time.time())}")
    else:  # a resumed run goes on in the directory of its checkpoint
        run_dir = os.path.dirname(os.path.abspath(args.resume))
    if is_main:
        os.makedirs(run_dir, exist_ok=True)
        if args.track:
            import wandb
            wandb.init(project=args.wandb_project_name, entity=args.wandb_entity, sync_tensorboard=True,
                       config=asdict(args), name=os.path.basename(run_dir), save_code=True)
        writer = SummaryWriter(run_dir)
        writer.add_text("hyperparameters", "|param|value|\n|-|-|\n" +
                        "\n".join(f"|{key}|{value}|" for key, value in asdict(args).items()))

    agent = Agent(obs_dim, num_actions).to(device)
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5, fused=True)
    if checkpoint is not None:
        agent.load_state_dict(checkpoint["agent"])
        optimizer.load_state_dict(checkpoint["optimizer"])
    if world_size > 1:  # every rank starts from rank 0's parameters
        for parameter in agent.parameters():
            dist.broadcast(parameter.data, src=0)
    recent_returns = collections.deque(stats["recent_returns"], maxlen=20)

    N, T = args.num_envs // world_size, args.num_steps  # N: the envs of this process
    envs = make_vec_env(env_id, N, args.capture_video and is_main, os.path.join(run_dir, "videos"))
    next_obs, _ = envs.reset(seed=args.seed + global_step + rank * N)  # env i of rank r gets this seed + r N + i
    action_start = int(envs.single_action_space.start)  # Discrete(n, start) acts in start .. start + n - 1
    batch_size = args.num_envs * T  # over all ranks
    num_iterations = math.ceil(args.total_timesteps / batch_size)
    # Rollout storage, filled in numpy (cheap per-step writes), turned into tensors once per rollout.
    obs_buf = np.zeros((T, N, obs_dim), dtype=np.float32)
    next_obs_buf = np.zeros((T, N, obs_dim), dtype=np.float32)  # s_{t+1}, final obs at episode ends
    actions_buf = np.zeros((T, N), dtype=np.int64)
    rewards_buf = np.zeros((T, N), dtype=np.float32)
    terminations_buf = np.zeros((T, N), dtype=np.float32)
    truncations_buf = np.zeros((T, N), dtype=np.float32)

    start_time = time.perf_counter()
    start_step, last_print = global_step, start_time
    previous_seconds = stats["wall_seconds"]
    interrupted = failed = False
    with StopOnSigint(announce=is_main) as sigint:
        if is_main:
            processes = f" ({world_size} processes x {N} envs)" if world_size > 1 else ""
            print(f"PPO on {args.env_id}: {num_iterations - global_step // batch_size} updates of {batch_size} "
                  f"steps on {device}{processes}; logging to {run_dir}", flush=True)
        for iteration in range(global_step // batch_size, num_iterations):
            if args.anneal_lr:  # lr falls linearly: lr0 at the first update, lr0 / num_iterations at the last
                optimizer.param_groups[0]["lr"] = args.learning_rate * (1.0 - iteration / num_iterations)

            # --- rollout: act with the current policy, keep what GAE and the loss need ---------
            episodes = []  # (step, env, seconds, return, length) of each episode that ends
            for t in range(T):
                obs_buf[t] = next_obs
                with torch.inference_mode():
                    action = agent.sample_action(torch.from_numpy(obs_buf[t]).to(device)).cpu().numpy()
                next_obs, reward, terminated, truncated, info = envs.step(action + action_start)
                actions_buf[t], rewards_buf[t] = action, reward
                terminations_buf[t], truncations_buf[t] = terminated, truncated
                next_obs_buf[t] = successor_obs(next_obs, info)
                global_step += N * world_size  # every rank takes a step in each of its envs
                if "_episode" in info.get("final_info", {}):
                    episode = info["final_info"]["episode"]
                    for i in np.flatnonzero(info["final_info"]["_episode"]):
                        episodes.append((global_step, rank * N + i, time.perf_counter() - start_time,
                                         float(episode["r"][i]), int(episode["l"][i])))

            # --- advantages, with the networks as they were during the rollout -----------------
            obs = torch.from_numpy(obs_buf).to(device)
            actions = torch.from_numpy(actions_buf).to(device)
            with torch.no_grad():
                values = agent.value(obs)
                next_values = agent.value(torch.from_numpy(next_obs_buf).to(device))
                logprobs, _ = agent.logprob_entropy(obs, actions)  # log π_θold(a_t|s_t)
                advantages = compute_gae(torch.from_numpy(rewards_buf).to(device), values, next_values,
                                         torch.from_numpy(terminations_buf).to(device),
                                         torch.from_numpy(truncations_buf).to(device),
                                         args.gamma, args.gae_lambda)
                returns = advantages + values  # R̂_t = Â_t + V(s_t)
            batch = {"obs": obs.reshape(N * T, obs_dim), "actions": actions.reshape(-1),
                     "logprobs": logprobs.reshape(-1), "advantages": advantages.reshape(-1),
                     "returns": returns.reshape(-1), "values": values.reshape(-1)}

            # --- update ------------------------------------------------------------------------
            try:
                losses = ppo_update(agent, optimizer, batch, args, world_size)
            except FloatingPointError as e:  # raised on every rank alike: the loss is averaged over them
                if is_main:
                    print(f"ppo.py: error: training stopped at step {global_step}: {e}", file=sys.stderr)
                failed = True

            # --- episodes that ended, from every rank, in order of step and env --------------------
            shared = gather_from_ranks((episodes, sigint.requested), world_size)
            stop = any(requested for _, requested in shared)  # a Ctrl-C to any rank stops them all
            ended = sorted(episode for rank_episodes, _ in shared for episode in rank_episodes)
            for step, same_step in itertools.groupby(ended, key=lambda episode: episode[0]):
                for _, _, seconds, episodic_return, length in same_step:
                    recent_returns.append(episodic_return)
                    if is_main:
                        writer.add_scalar("charts/episodic_return", episodic_return, step)
                        writer.add_scalar("charts/episodic_length", length, step)
                if (stats["steps_to_threshold"] is None and threshold is not None
                        and len(recent_returns) == recent_returns.maxlen and np.mean(recent_returns) >= threshold):
                    stats["steps_to_threshold"] = step
                    stats["seconds_to_threshold"] = previous_seconds + seconds
            if failed:
                break

            # --- logging -----------------------------------------------------------------------
            elapsed = time.perf_counter() - start_time
            sps = (global_step - start_step) / elapsed
            now = time.perf_counter()
            if is_main:
                writer.add_scalar("charts/learning_rate", optimizer.param_groups[0]["lr"], global_step)
                writer.add_scalar("charts/SPS", sps, global_step)
                for key in ("policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac"):
                    if key in losses:
                        writer.add_scalar(f"losses/{key}", losses[key], global_step)
                writer.add_scalar("losses/explained_variance",  # of rank 0's share of the batch
                                  explained_variance(batch["values"], batch["returns"]), global_step)
                writer.add_scalar("charts/update_epochs_run", losses["epochs"], global_step)
            if is_main and (now - last_print >= 5.0 or iteration == num_iterations - 1 or stop):
                last_print = now
                recent = f"{np.mean(recent_returns):8.1f}" if recent_returns else "     n/a"
                eta = (num_iterations * batch_size - global_step) / max(sps, 1e-9)
                print(f"step {global_step:>9,} ({100 * global_step / (num_iterations * batch_size):3.0f}%)"
                      f" | return {recent} (last {len(recent_returns)}) | {sps:7,.0f} steps/s"
                      f" | ETA {format_seconds(eta)}", flush=True)
            if stop and iteration < num_iterations - 1:
                interrupted = True
                break
    envs.close()
    if world_size > 1:
        dist.destroy_process_group()
        gc.collect()  # free the group's leftovers now: freed at interpreter exit, they sometimes aborted a rank
    if not is_main:
        return None

    train_seconds = time.perf_counter() - start_time
    wall_seconds = previous_seconds + train_seconds
    stats.update(recent_returns=list(recent_returns), wall_seconds=wall_seconds)
    checkpoint_path = os.path.join(run_dir, f"{args.exp_name}.pt")
    weights_finite = all(torch.isfinite(p).all() for p in agent.parameters())
    if args.save_model and weights_finite:  # a checkpoint on disk is never replaced by broken weights
        save_checkpoint(checkpoint_path, agent, optimizer, global_step, args, stats)
    eval_returns = []
    if not (interrupted or failed):
        eval_returns = evaluate(agent, env_id, args.eval_episodes, args.seed + 10_000, device)
        for i, episodic_return in enumerate(eval_returns):
            writer.add_scalar("eval/episodic_return", episodic_return, i)
    writer.close()
    if args.track:
        wandb.finish()

    summary = {
        "algorithm": "ppo", "env_id": args.env_id, "seed": args.seed, "global_step": global_step,
        "wall_seconds": wall_seconds, "sps": (global_step - start_step) / train_seconds,
        "final_return": float(np.mean(recent_returns)) if recent_returns else None,
        "eval_return": float(np.mean(eval_returns)) if eval_returns else None,
        "eval_return_std": float(np.std(eval_returns)) if eval_returns else None,
        "reward_threshold": threshold, "steps_to_threshold": stats["steps_to_threshold"],
        "seconds_to_threshold": stats["seconds_to_threshold"],
        "interrupted": interrupted, "failed": failed,
        "checkpoint": checkpoint_path if args.save_model and weights_finite else None, "run_dir": run_dir,
        "args": asdict(args),
    }
    with open(os.path.join(run_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    if interrupted:
        resume_hint = f"; continue with --resume {checkpoint_path}" if args.save_model else ""
        print(f"interrupted at step {global_step:,}{resume_hint}", flush=True)
    elif not failed:
        print(f"eval: mean return {summary['eval_return']:.1f} ± {summary['eval_return_std']:.1f} over "
              f"{len(eval_returns)} greedy episodes (training: {summary['final_return']}, "
              f"{wall_seconds:.1f}s, {summary['sps']:,.0f} steps/s)", flush=True)
    return summary


# --------------------------------------------------------------------------------- evaluate
def evaluate(agent: Agent, env_id: str, episodes: int, seed: int, device: torch.device,
             video_dir: Optional[str] = None) -> list[float]:
    """Returns of `episodes` episodes with greedy actions argmax_a π(a|s)."""
    env = make_env(env_id, video_dir is not None, video_dir or "")()
    action_start = int(env.action_space.start)
    returns = []
    obs, _ = env.reset(seed=seed)
    for _ in range(episodes):
        done, episodic_return = False, 0.0
        while not done:
            with torch.inference_mode():
                obs_tensor = torch.as_tensor(np.asarray(obs, dtype=np.float32), device=device)
                action = int(agent.greedy_action(obs_tensor)) + action_start
            obs, reward, terminated, truncated, _ = env.step(action)
            episodic_return += float(reward)
            done = terminated or truncated
        returns.append(episodic_return)
        obs, _ = env.reset()
    env.close()
    return returns


def evaluate_checkpoint(args: Args) -> list[float]:
    """--eval-checkpoint: load the agent saved at that path and run greedy episodes."""
    env_id, obs_dim, num_actions, _, device = check_setup(args)
    checkpoint = load_checkpoint(args.eval_checkpoint, obs_dim, num_actions, device)
    agent = Agent(obs_dim, num_actions).to(device)
    agent.load_state_dict(checkpoint["agent"])
    video_dir = (os.path.join(os.path.dirname(os.path.abspath(args.eval_checkpoint)), "videos", "eval")
                 if args.capture_video else None)
    returns = evaluate(agent, env_id, args.eval_episodes, args.seed + 10_000, device, video_dir)
    print(f"eval: mean return {np.mean(returns):.1f} ± {np.std(returns):.1f} over {len(returns)} "
          f"greedy episodes of {args.env_id} (checkpoint at step {checkpoint['global_step']:,})", flush=True)
    return returns


def defaults_from_checkpoint(argv: list[str]) -> Args:
    """With --resume or --eval-checkpoint, the checkpoint's saved arguments become the defaults,
    so a run goes on as it was started; flags given on the command line still override them."""
    for i, word in enumerate(argv):
        flag, _, value = word.partition("=")
        if flag in ("--resume", "--eval-checkpoint"):
            path = value or (argv[i + 1] if i + 1 < len(argv) else "")
            try:
                saved = torch.load(path, map_location="cpu", weights_only=False)["args"]
            except Exception:
                return Args()  # a bad path is reported, once parsed, by load_checkpoint
            fields = Args.__dataclass_fields__
            return Args(**{k: v for k, v in saved.items() if k in fields and k not in ("resume", "eval_checkpoint")})
    return Args()


if __name__ == "__main__":
    cli_args = tyro.cli(Args, default=defaults_from_checkpoint(sys.argv[1:]), description=__doc__.split("\n\n")[0])
    try:
        if cli_args.eval_checkpoint:
            evaluate_checkpoint(cli_args)
        else:
            summary = train(cli_args)
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # the run is over: a late Ctrl-C has nothing to stop
            if summary is None:  # another rank than 0 under torchrun: rank 0 reports how the run ended
                exit_process(0)
            exit_process(130 if summary["interrupted"] else 1 if summary["failed"] else 0)
    except UsageError as error:
        # Under torchrun the processes on one machine share flags, files and packages, so they fail
        # alike: local rank 0 says why, the others leave it to it (exiting first, they would have
        # torchrun stop it before it could).
        if "TORCHELASTIC_RUN_ID" in os.environ and os.environ.get("LOCAL_RANK", "0") != "0":
            exit_process(0)
        print(f"ppo.py: error: {error}", file=sys.stderr)
        exit_process(2)
    except KeyboardInterrupt:
        if os.environ.get("RANK", "0") == "0":
            print("aborted without saving", file=sys.stderr)
        exit_process(130)
