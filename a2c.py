"""Advantage actor-critic (A2C): the policy gradient weighted by bootstrapped advantage estimates.

The idea this file adds to reinforce_baseline.py: let the critic bootstrap. REINFORCE weighs
log π_θ(a_t|s_t) by the return G_t, so it must wait for the episode to end, and G_t carries the
noise of every reward after t. Here the weight is an estimate of the advantage

    A(s,a) = Q(s,a) - V(s)                        how much better a is than the policy's average in s

built from a few rewards and the critic's V(s) for the rest. Updates need only a short rollout.

The TD error estimates the advantage. With V = V^π, the expected TD error given (s_t, a_t) is
the advantage, because E[r_t + γV(s_{t+1}) | s_t, a_t] = Q(s_t, a_t):

    δ_t = r_t + γ (1 - term_t) V(s_{t+1}) - V(s_t)                         TD error

One reward and the critic: little variance, but biased as far as V is wrong. Using more rewards
before bootstrapping trades the bias back for variance. The n-step return bootstraps at the end
of the rollout, so the step k steps from that end gets a k-step return:

    R̂_t = r_t + γ r_{t+1} + ... + γ^{k-1} r_{t+k-1} + γ^k V(s_{t+k}),   k = n - t
    Â_t = R̂_t - V(s_t) = Σ_{l<k} γ^l δ_{t+l}                              (no episode ending in between)

An episode that ends inside the rollout ends the sum there instead. Generalised advantage
estimation (GAE) weighs the TD errors geometrically, with done_t = term_t or trunc_t stopping
the sum at an episode's end. λ = 0 gives δ_t, λ = 1 (the default) the n-step advantage above:

    Â_t = δ_t + γ λ (1 - done_t) Â_{t+1}                                   GAE(λ)

s_{t+1} is the true successor state. When an episode ends at t, the vector env has already
reset, so s_{t+1} is the final observation it reports in info["final_obs"]. A time-limit
truncation is not a real end: its return is bootstrapped from V(s_{t+1}). Only a true
termination cuts it (term_t = 1).

One gradient step per rollout of N envs x n steps, on the sum of three losses:

    L(θ) = -E_t[ log π_θ(a_t|s_t) Â_t ]            policy gradient, Â_t held constant
           + c_v · ½ E_t[ (V_θ(s_t) - R̂_t)² ]         critic regression on R̂_t = Â_t + V(s_t)
           - c_e · E_t[ H(π_θ(·|s_t)) ]               entropy bonus

Entropy regularisation. The bonus c_e · H pays the policy for staying random, so it keeps
exploring and does not collapse onto one action on the strength of a few noisy advantages. On a
Gaussian with a state-independent log σ, H = Σ_i log σ_i + const, so the bonus pulls every log σ_i
up with the same constant force c_e; on MuJoCo that kept σ growing (see README.md), and the
settings given there use no bonus. --value-loss huber swaps the square for the Huber loss (square within ±1, linear beyond), which
caps the gradient of a large error.

Why synchronous. A3C (Mnih et al. 2016) ran actor-learners in parallel threads, each applying its
gradients to shared parameters whenever it was ready, against parameters others had changed
meanwhile. The parallel envs were what helped: they decorrelate the data an update sees, in the
place of DQN's replay buffer. A2C keeps them and drops the asynchrony. All envs step together
with the same parameters, and one batched update follows. No stale gradients, one forward pass
for all envs, and the same results from the same seed; OpenAI, who named A2C, found it to learn
as well as A3C.

The policy is Categorical for a Discrete action space and a diagonal Gaussian with a
state-independent log σ for a Box one. The sample is stored; only the copy sent to the env is
clipped to the bounds. The optimiser is RMSprop with α 0.99 as in the paper (and eps 1e-5, the
common choice since OpenAI Baselines; torch adds it outside the square root), or Adam.

    log π_θ(a|s) = z_a - log Σ_b exp z_b                                   z = logits_θ(s)
    log π_θ(a|s) = Σ_i [ -(a_i - μ_θ(s)_i)² / (2σ_i²) - log σ_i - ½ log 2π ]

--norm-obs and --norm-reward (for MuJoCo) use gymnasium's wrappers, with running statistics
shared by all envs, saved in the checkpoint and frozen for evaluation. Logged returns are the
env's own, recorded before them:

    s ← clip((s - mean[s]) / √(var[s] + 1e-8), -10, 10)                    observations
    r ← clip(r / √(var[G] + 1e-8), -10, 10),  G ← γ (1 - term) G + r         rewards; G the discounted return

Defaults (8 envs x 5 steps, RMSprop lr 3e-3, γ 0.98, λ 1, no entropy bonus, 100k steps) were
tuned on CartPole-v1; README.md gives the settings used for MuJoCo.

References:
    Mnih, Badia, Mirza, Graves, Lillicrap, Harley, Silver, Kavukcuoglu (2016). Asynchronous
        Methods for Deep Reinforcement Learning. ICML. arXiv:1602.01783
    Wu, Mansimov, Liao, Grosse, Ba (2017). Scalable trust-region method for deep reinforcement
        learning using Kronecker-factored approximation (A2C, the synchronous variant, as a
        baseline). arXiv:1708.05144
    Schulman, Moritz, Levine, Jordan, Abbeel (2016). High-Dimensional Continuous Control
        Using Generalized Advantage Estimation. arXiv:1506.02438

Example:
    python a2c.py --env-id CartPole-v1 --seed 1
    python a2c.py --eval-checkpoint runs/<run>/a2c.pt
"""

import collections
import importlib
import json
import math
import os
import random
import signal
import sys
import time
from dataclasses import asdict, dataclass
from typing import Literal, Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import gymnasium as gym
import tyro
from gymnasium.wrappers.utils import RunningMeanStd
from torch.utils.tensorboard import SummaryWriter

ALGORITHM = "a2c"  # names this script in its messages, checkpoints and summary.json


@dataclass
class Args:
    # --- experiment -------------------------------------------------------------------------
    exp_name: str = ALGORITHM
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
    """evaluate this checkpoint with greedy (or mean) actions instead of training"""
    eval_episodes: int = 10
    """greedy (or mean-action) episodes run after training, or with --eval-checkpoint"""

    # --- algorithm --------------------------------------------------------------------------
    learning_rate: float = 3e-3
    """step size of the optimiser"""
    optimizer: Literal["rmsprop", "adam"] = "rmsprop"
    """RMSprop (α 0.99, eps 1e-5) or Adam (eps 1e-5)"""
    anneal_lr: bool = False
    """decay the learning rate linearly over the run, to lr / (number of updates) at the last"""
    num_envs: int = 8
    """parallel envs in the vector env"""
    num_steps: int = 5
    """steps per env in each rollout (the n of n-step returns); a rollout is num_envs * num_steps transitions"""
    gamma: float = 0.98
    """discount factor γ"""
    gae_lambda: float = 1.0
    """GAE λ: 1 gives n-step returns minus V, 0 one-step TD errors"""
    norm_adv: bool = False
    """normalise each rollout's advantages to zero mean and unit std"""
    ent_coef: float = 0.0
    """weight c_e of the entropy bonus"""
    vf_coef: float = 0.5
    """weight c_v of the value loss"""
    value_loss: Literal["mse", "huber"] = "mse"
    """the critic's loss: ½ squared error, or Huber (the same within ±1, linear beyond)"""
    max_grad_norm: float = 0.5
    """clip the global gradient norm to this"""
    norm_obs: bool = False
    """normalise observations by their running mean and std, then clip them to ±10 (for MuJoCo)"""
    norm_reward: bool = False
    """scale rewards by the running std of the discounted return, then clip them to ±10 (for MuJoCo)"""


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


def check_spaces(env: gym.Env) -> tuple[int, gym.Space]:
    """Return (observation size, action space); raise UsageError if this script cannot use them."""
    name = env.spec.id if env.spec else type(env).__name__
    action_space = env.action_space
    if not (isinstance(action_space, gym.spaces.Discrete)
            or isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1):
        raise UsageError(f"{name} has action space {action_space}; {ALGORITHM}.py needs a Discrete one "
                         "or a flat Box (vector) one")
    obs_space = env.observation_space
    if not (isinstance(obs_space, gym.spaces.Box) and len(obs_space.shape) == 1):
        raise UsageError(f"{name} has observation space {obs_space}; {ALGORITHM}.py needs a flat Box "
                         "(vector) observation: flatten it with a wrapper first")
    return obs_space.shape[0], action_space


def successor_obs(next_obs: np.ndarray, info: dict) -> np.ndarray:
    """The true s_{t+1} of each env. Where an episode just ended, the vector env has already
    reset and returned the next episode's first observation; the final one is in info."""
    if "_final_obs" not in info:
        return next_obs
    successor = next_obs.copy()
    for i in np.flatnonzero(info["_final_obs"]):
        successor[i] = info["final_obs"][i]
    return successor


def make_env(env_id: str, obs_rms: Optional[RunningMeanStd] = None, return_rms: Optional[RunningMeanStd] = None,
             gamma: float = 0.99, update_stats: bool = True, capture_video: bool = False, video_dir: str = ""):
    """A thunk building one env that records its episodes' statistics; with capture_video, it
    records videos of them to video_dir. Then come the normalising wrappers, with the statistics
    objects given (shared by all envs, carried by the checkpoint), frozen if not update_stats."""
    def thunk():
        if capture_video:
            env = gym.make(env_id, render_mode="rgb_array")
            env = gym.wrappers.RecordVideo(env, video_dir, disable_logger=True)
        else:
            env = gym.make(env_id)
        env = gym.wrappers.RecordEpisodeStatistics(env)
        if obs_rms is not None:
            env = gym.wrappers.NormalizeObservation(env)
            env.obs_rms, env.update_running_mean = obs_rms, update_stats
            env = gym.wrappers.TransformObservation(env, lambda obs: np.clip(obs, -10, 10), env.observation_space)
        if return_rms is not None:
            env = gym.wrappers.NormalizeReward(env, gamma=gamma)
            env.return_rms, env.update_running_mean = return_rms, update_stats
            env = gym.wrappers.ClipReward(env, -10, 10)
        return env
    return thunk


def make_vec_env(args: Args, env_id: str, obs_rms, return_rms, video_dir: str) -> gym.vector.VectorEnv:
    """num_envs copies in one process, autoreset in the same step (so final_obs is at hand). An
    episode's statistics arrive in info["final_info"]."""
    thunks = [make_env(env_id, obs_rms, return_rms, gamma=args.gamma, capture_video=args.capture_video and i == 0,
                       video_dir=video_dir) for i in range(args.num_envs)]
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
    """The actor π_θ(a|s) and the critic V_θ(s), separate 64-64 tanh MLPs. The actor is
    Categorical over its logits for a Discrete action space, or a diagonal Gaussian with mean
    μ_θ(s) and a state-independent learned log σ for a Box one."""

    def __init__(self, obs_dim: int, action_space: gym.Space):
        super().__init__()
        self.discrete = isinstance(action_space, gym.spaces.Discrete)
        action_size = int(action_space.n) if self.discrete else action_space.shape[0]
        self.critic = mlp(obs_dim, 1, out_std=1.0)
        # A small last layer starts the policy near uniform (or the mean near 0, with σ = 1).
        self.actor = mlp(obs_dim, action_size, out_std=0.01)
        if not self.discrete:
            self.log_std = nn.Parameter(torch.zeros(action_size))

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.critic(obs).squeeze(-1)

    def logprob_entropy(self, obs: torch.Tensor, actions: torch.Tensor):
        """log π_θ(a|s) of the given actions and the entropy H(π_θ(·|s)), per state."""
        if self.discrete:
            log_probs = torch.log_softmax(self.actor(obs), dim=-1)  # z_a - log Σ_b exp z_b
            logprob = log_probs.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)
            entropy = -(log_probs.exp() * log_probs).sum(-1)
            return logprob, entropy
        mean, log_std = self.actor(obs), self.log_std
        z = (actions - mean) / log_std.exp()
        logprob = (-0.5 * z ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)  # Σ_i log N(a_i; μ_i, σ_i²)
        entropy = (0.5 + 0.5 * math.log(2 * math.pi) + log_std).sum(-1).expand(obs.shape[:-1])
        return logprob, entropy

    def sample_action(self, obs: torch.Tensor) -> torch.Tensor:
        """a ~ π_θ(·|s): a Categorical draw, or μ_θ(s) + σ ⊙ ε with ε ~ N(0, I) (before clipping)."""
        out = self.actor(obs)
        if self.discrete:  # Gumbel-max: argmax_a (z_a - log E_a), E_a ~ Exp(1), draws a from softmax(z)
            return (out - torch.empty_like(out).exponential_().log()).argmax(-1)
        return out + self.log_std.exp() * torch.randn_like(out)

    def greedy_action(self, obs: torch.Tensor) -> torch.Tensor:
        """The most probable action: argmax of the logits, or the Gaussian's mean."""
        out = self.actor(obs)
        return out.argmax(-1) if self.discrete else out


# --------------------------------------------------------------- the math, and the update
def compute_gae(rewards, values, next_values, terminations, truncations, gamma: float, lam: float):
    """Generalised advantage estimates Â_t for a rollout of shape (T,) or (T, num_envs).

    next_values[t] is V(s_{t+1}) of the true successor state: at an episode's end, the value of
    its final observation. A termination zeroes it; a truncation keeps it (bootstraps the
    return the time limit cut off). Either one stops the recursion at the episode boundary.
    With λ = 1, Â_t + V(s_t) is the n-step return, bootstrapped at the end of the rollout.
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


def policy_loss(logprobs: torch.Tensor, advantages: torch.Tensor) -> torch.Tensor:
    """-E_t[log π_θ(a_t|s_t) Â_t]: its gradient is minus the policy gradient estimate."""
    return -(logprobs * advantages).mean()


def value_loss(values: torch.Tensor, returns: torch.Tensor, kind: str) -> torch.Tensor:
    """½ E[(V_θ(s) - R̂)²], or the Huber loss: the same for errors within ±1, linear beyond."""
    if kind == "huber":
        return F.huber_loss(values, returns, delta=1.0)
    return 0.5 * ((values - returns) ** 2).mean()


def explained_variance(predicted: torch.Tensor, target: torch.Tensor) -> float:
    """1 - Var(target - predicted) / Var(target): 1 is a perfect critic, 0 no better than a constant."""
    var_target = target.var()
    return float("nan") if var_target == 0 else float(1 - (target - predicted).var() / var_target)


def a2c_update(agent: Agent, optimizer: torch.optim.Optimizer, rollout: dict, args: Args) -> dict:
    """One gradient step on the rollout (tensors of shape (T, N, ...)); returns the diagnostics."""
    values = agent.value(rollout["obs"])  # V_θ(s_t), with the graph the value loss needs
    with torch.no_grad():  # Â_t and R̂_t are targets: constants to the gradient
        next_values = agent.value(rollout["next_obs"])
        advantages = compute_gae(rollout["rewards"], values.detach(), next_values, rollout["terminations"],
                                 rollout["truncations"], args.gamma, args.gae_lambda)
        returns = advantages + values.detach()  # R̂_t = Â_t + V(s_t), before any normalising of Â
        if args.norm_adv:
            advantages = (advantages - advantages.mean()) / (advantages.std(correction=0) + 1e-8)
    logprobs, entropy = agent.logprob_entropy(rollout["obs"], rollout["actions"])
    pg_loss = policy_loss(logprobs, advantages)
    v_loss = value_loss(values, returns, args.value_loss)
    entropy = entropy.mean()
    loss = pg_loss - args.ent_coef * entropy + args.vf_coef * v_loss
    if not torch.isfinite(loss):
        raise FloatingPointError(f"loss is {loss.item()} (policy {pg_loss.item()}, value {v_loss.item()})")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
    if not torch.isfinite(grad_norm):  # clipping would spread it into every parameter
        raise FloatingPointError(f"gradient norm is {grad_norm.item()}")
    optimizer.step()
    with torch.no_grad():  # a diagnostic only: how far the step moved the policy, k3 estimate of KL(old ‖ new)
        log_ratio = agent.logprob_entropy(rollout["obs"], rollout["actions"])[0] - logprobs.detach()
        approx_kl = ((log_ratio.exp() - 1) - log_ratio).mean()
    return {"policy_loss": pg_loss.item(), "value_loss": v_loss.item(), "entropy": entropy.item(),
            "approx_kl": approx_kl.item(), "grad_norm": grad_norm.item(),
            "explained_variance": explained_variance(values.detach(), returns)}


# ---------------------------------------------------------------------------------- helpers
def validate_args(args: Args) -> None:
    """Raise UsageError for flag values that cannot work, before anything is built."""
    for name in ("total_timesteps", "num_envs", "num_steps", "eval_episodes", "torch_threads"):
        if getattr(args, name) <= 0:
            raise UsageError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    for name in ("gamma", "gae_lambda"):
        if not 0.0 <= getattr(args, name) <= 1.0:
            raise UsageError(f"--{name.replace('_', '-')} must lie in [0, 1], got {getattr(args, name)}")
    for name in ("learning_rate", "max_grad_norm"):
        if not (getattr(args, name) > 0 and math.isfinite(getattr(args, name))):
            raise UsageError(f"--{name.replace('_', '-')} must be a positive finite number, got {getattr(args, name)}")
    for name in ("ent_coef", "vf_coef"):
        if not (getattr(args, name) >= 0 and math.isfinite(getattr(args, name))):
            raise UsageError(f"--{name.replace('_', '-')} must be a finite number ≥ 0, got {getattr(args, name)}")
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


def check_setup(args: Args) -> tuple[str, int, gym.Space, Optional[float], torch.device]:
    """Validate flags and env, set torch's threads; return (env id for gymnasium.make,
    observation size, action space, the env's reward threshold or None, device)."""
    validate_args(args)
    env_id = resolve_env_id(args.env_id)
    probe = gym.make(env_id)
    obs_dim, action_space = check_spaces(probe)
    threshold = probe.spec.reward_threshold if probe.spec else None
    probe.close()
    torch.set_num_threads(args.torch_threads)
    device = torch.device("cuda" if args.cuda and torch.cuda.is_available() else "cpu")
    return env_id, obs_dim, action_space, threshold, device


def make_optimizer(agent: Agent, args: Args) -> torch.optim.Optimizer:
    if args.optimizer == "adam":
        return torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5)
    return torch.optim.RMSprop(agent.parameters(), lr=args.learning_rate, alpha=0.99, eps=1e-5)


def describe(action_space: gym.Space) -> str:
    """How a checkpoint records the action space it was trained on, e.g. 'Discrete(2)' or 'Box(6,)'."""
    if isinstance(action_space, gym.spaces.Discrete):
        start = f", start={action_space.start}" if action_space.start else ""
        return f"Discrete({action_space.n}{start})"
    return f"Box{action_space.shape}"


def load_checkpoint(path: str, obs_dim: int, action_space: gym.Space, device: torch.device) -> dict:
    """Load a checkpoint, checking that it exists and fits the env; raise UsageError otherwise."""
    if not os.path.isfile(path):
        raise UsageError(f"checkpoint {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location=device, weights_only=False)
        trained = (checkpoint["obs_dim"], checkpoint["action_space"])
        if checkpoint["algorithm"] != ALGORITHM:
            raise ValueError(f"it was written by {checkpoint['algorithm']}.py")
    except Exception as e:
        raise UsageError(f"{path} is not an {ALGORITHM}.py checkpoint ({type(e).__name__}: {e})") from None
    if trained != (obs_dim, describe(action_space)):
        raise UsageError(f"checkpoint {path} was trained on {checkpoint['args']['env_id']} "
                         f"({trained[0]} observations, actions {trained[1]}), which does not match this env "
                         f"({obs_dim}, {describe(action_space)}); pass --env-id {checkpoint['args']['env_id']}")
    return checkpoint


def save_checkpoint(path: str, agent: Agent, optimizer, global_step: int, args: Args, stats: dict,
                    obs_rms: Optional[RunningMeanStd], return_rms: Optional[RunningMeanStd], action_space: gym.Space):
    torch.save({"agent": agent.state_dict(), "optimizer": optimizer.state_dict(), "global_step": global_step,
                "algorithm": ALGORITHM, "obs_dim": agent.actor[0].in_features, "action_space": describe(action_space),
                "args": asdict(args), "stats": stats, "obs_rms": obs_rms, "return_rms": return_rms}, path + ".tmp")
    os.replace(path + ".tmp", path)  # never leave a half-written checkpoint behind


def format_seconds(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


class StopOnSigint:
    """While active, the first Ctrl-C only asks the loop to stop (it saves a checkpoint at the
    end of the current update); a second Ctrl-C interrupts at once."""

    def __enter__(self):
        self.requested = False
        self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
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


# ------------------------------------------------------------------------------------ train
def train(args: Args) -> dict:
    """Train as `args` say; return the run summary (also written to summary.json)."""
    env_id, obs_dim, action_space, threshold, device = check_setup(args)
    checkpoint = load_checkpoint(args.resume, obs_dim, action_space, device) if args.resume else None
    if checkpoint is None:  # running statistics of the normalising wrappers, shared by all envs
        obs_rms = RunningMeanStd(shape=(obs_dim,)) if args.norm_obs else None
        return_rms = RunningMeanStd(shape=()) if args.norm_reward else None
    else:
        obs_rms, return_rms = checkpoint["obs_rms"], checkpoint["return_rms"]
        if (obs_rms is not None, return_rms is not None) != (args.norm_obs, args.norm_reward):
            raise UsageError(f"checkpoint {args.resume} was trained with --norm-obs {obs_rms is not None} "
                             f"and --norm-reward {return_rms is not None}; resume with the same")
        if checkpoint["args"]["optimizer"] != args.optimizer:
            raise UsageError(f"checkpoint {args.resume} was trained with --optimizer "
                             f"{checkpoint['args']['optimizer']}; resume with the same")
        if checkpoint["global_step"] >= args.total_timesteps:
            raise UsageError(f"checkpoint {args.resume} is already at step {checkpoint['global_step']:,}; pass a "
                             "larger --total-timesteps to train on")

    # A resumed run goes on with fresh random numbers, not those its start drew.
    seed_everything(args.seed + (checkpoint["global_step"] if checkpoint else 0), args.torch_deterministic)
    if checkpoint is None:
        safe_id = args.env_id.replace("/", "_").replace(":", "_")
        run_dir = os.path.join(args.runs_dir, f"{safe_id}__{args.exp_name}__{args.seed}__{int(time.time())}")
    else:  # a resumed run goes on in the directory of its checkpoint
        run_dir = os.path.dirname(os.path.abspath(args.resume))
    os.makedirs(run_dir, exist_ok=True)
    if args.track:
        import wandb
        wandb.init(project=args.wandb_project_name, entity=args.wandb_entity, sync_tensorboard=True,
                   config=asdict(args), name=os.path.basename(run_dir), save_code=True)
    writer = SummaryWriter(run_dir)
    writer.add_text("hyperparameters", "|param|value|\n|-|-|\n" +
                    "\n".join(f"|{key}|{value}|" for key, value in asdict(args).items()))

    agent = Agent(obs_dim, action_space).to(device)
    optimizer = make_optimizer(agent, args)
    global_step = 0
    stats = {"recent_returns": [], "steps_to_threshold": None, "seconds_to_threshold": None,
             "wall_seconds": 0.0}
    if checkpoint is not None:
        agent.load_state_dict(checkpoint["agent"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        optimizer.param_groups[0]["lr"] = args.learning_rate  # the saved state brought the old one back
        global_step, stats = checkpoint["global_step"], checkpoint["stats"]
    recent_returns = collections.deque(stats["recent_returns"], maxlen=20)

    envs = make_vec_env(args, env_id, obs_rms, return_rms, os.path.join(run_dir, "videos"))
    next_obs, _ = envs.reset(seed=args.seed + global_step)  # sub-env i gets this seed + i
    box = not agent.discrete
    action_low, action_high = (envs.single_action_space.low, envs.single_action_space.high) if box else (None, None)
    action_start = 0 if box else int(envs.single_action_space.start)  # Discrete(n, start): start .. start + n - 1
    N, T = args.num_envs, args.num_steps
    batch_size = N * T
    num_iterations = math.ceil(args.total_timesteps / batch_size)
    # Rollout storage, filled in numpy (cheap per-step writes), turned into tensors once per rollout.
    obs_buf = np.zeros((T, N, obs_dim), dtype=np.float32)
    next_obs_buf = np.zeros((T, N, obs_dim), dtype=np.float32)  # s_{t+1}, final obs at episode ends
    actions_buf = (np.zeros((T, N, action_space.shape[0]), dtype=np.float32) if box  # as sampled, before clipping
                   else np.zeros((T, N), dtype=np.int64))
    rewards_buf = np.zeros((T, N), dtype=np.float32)
    terminations_buf = np.zeros((T, N), dtype=np.float32)
    truncations_buf = np.zeros((T, N), dtype=np.float32)

    start_time = time.perf_counter()
    start_step, last_print = global_step, start_time
    previous_seconds = stats["wall_seconds"]
    interrupted = failed = False
    with StopOnSigint() as sigint:
        print(f"A2C on {args.env_id}: {num_iterations - global_step // batch_size:,} updates of {batch_size} "
              f"steps on {device}; logging to {run_dir}", flush=True)
        for iteration in range(global_step // batch_size, num_iterations):
            if args.anneal_lr:  # lr falls linearly: lr0 at the first update, lr0 / num_iterations at the last
                optimizer.param_groups[0]["lr"] = args.learning_rate * (1.0 - iteration / num_iterations)

            # --- rollout: n steps of every env with the current policy ------------------------
            for t in range(T):
                obs_buf[t] = next_obs
                with torch.inference_mode():
                    action = agent.sample_action(torch.from_numpy(obs_buf[t]).to(device)).cpu().numpy()
                next_obs, reward, terminated, truncated, info = envs.step(
                    np.clip(action, action_low, action_high) if box else action + action_start)
                actions_buf[t], rewards_buf[t] = action, reward
                terminations_buf[t], truncations_buf[t] = terminated, truncated
                next_obs_buf[t] = successor_obs(next_obs, info)
                global_step += N
                if "_episode" in info.get("final_info", {}):
                    episode = info["final_info"]["episode"]
                    for i in np.flatnonzero(info["final_info"]["_episode"]):
                        recent_returns.append(float(episode["r"][i]))
                        writer.add_scalar("charts/episodic_return", float(episode["r"][i]), global_step)
                        writer.add_scalar("charts/episodic_length", int(episode["l"][i]), global_step)
                    if (stats["steps_to_threshold"] is None and threshold is not None
                            and len(recent_returns) == recent_returns.maxlen
                            and np.mean(recent_returns) >= threshold):
                        stats["steps_to_threshold"] = global_step
                        stats["seconds_to_threshold"] = previous_seconds + time.perf_counter() - start_time

            # --- one gradient step on the rollout --------------------------------------------
            rollout = {name: torch.from_numpy(buf).to(device) for name, buf in (
                ("obs", obs_buf), ("next_obs", next_obs_buf), ("actions", actions_buf), ("rewards", rewards_buf),
                ("terminations", terminations_buf), ("truncations", truncations_buf))}
            try:
                losses = a2c_update(agent, optimizer, rollout, args)
            except FloatingPointError as e:
                print(f"{ALGORITHM}.py: error: training stopped at step {global_step}: {e}", file=sys.stderr)
                failed = True
                break

            # --- logging -----------------------------------------------------------------------
            elapsed = time.perf_counter() - start_time
            sps = (global_step - start_step) / elapsed
            writer.add_scalar("charts/learning_rate", optimizer.param_groups[0]["lr"], global_step)
            writer.add_scalar("charts/SPS", sps, global_step)
            for key, value in losses.items():
                writer.add_scalar(f"losses/{key}", value, global_step)
            now = time.perf_counter()
            if now - last_print >= 5.0 or iteration == num_iterations - 1 or sigint.requested:
                last_print = now
                recent = f"{np.mean(recent_returns):8.1f}" if recent_returns else "     n/a"
                eta = (num_iterations * batch_size - global_step) / max(sps, 1e-9)
                print(f"step {global_step:>9,} ({100 * global_step / (num_iterations * batch_size):3.0f}%)"
                      f" | return {recent} (last {len(recent_returns)}) | {sps:7,.0f} steps/s"
                      f" | ETA {format_seconds(eta)}", flush=True)
            if sigint.requested and iteration < num_iterations - 1:
                interrupted = True
                break
    envs.close()

    train_seconds = time.perf_counter() - start_time
    wall_seconds = previous_seconds + train_seconds
    stats.update(recent_returns=list(recent_returns), wall_seconds=wall_seconds)
    checkpoint_path = os.path.join(run_dir, f"{args.exp_name}.pt")
    weights_finite = (all(torch.isfinite(p).all() for p in agent.parameters())
                      and all(np.isfinite(rms.var).all() for rms in (obs_rms, return_rms) if rms is not None))
    if args.save_model and weights_finite:  # a checkpoint on disk is never replaced by broken weights
        save_checkpoint(checkpoint_path, agent, optimizer, global_step, args, stats, obs_rms, return_rms,
                        action_space)
    eval_returns = []
    if not (interrupted or failed):
        eval_returns = evaluate(agent, env_id, obs_rms, args.eval_episodes, args.seed + 10_000, device)
        for i, episodic_return in enumerate(eval_returns):
            writer.add_scalar("eval/episodic_return", episodic_return, i)
    writer.close()
    if args.track:
        wandb.finish()

    summary = {
        "algorithm": ALGORITHM, "env_id": args.env_id, "seed": args.seed, "global_step": global_step,
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
        final = f"{summary['final_return']:.1f}" if recent_returns else "no episode finished"
        print(f"eval: mean return {summary['eval_return']:.1f} ± {summary['eval_return_std']:.1f} over "
              f"{len(eval_returns)} greedy (mean-action) episodes (training: {final}, "
              f"{wall_seconds:.1f}s, {summary['sps']:,.0f} steps/s)", flush=True)
    return summary


# --------------------------------------------------------------------------------- evaluate
def evaluate(agent: Agent, env_id: str, obs_rms: Optional[RunningMeanStd], episodes: int, seed: int,
             device: torch.device, video_dir: Optional[str] = None) -> list[float]:
    """Raw returns of `episodes` episodes with the greedy action (the mean, for a Gaussian),
    observations normalised by the frozen obs_rms."""
    env = make_env(env_id, obs_rms, update_stats=False, capture_video=video_dir is not None,
                   video_dir=video_dir or "")()
    box = isinstance(env.action_space, gym.spaces.Box)
    returns = []
    obs, _ = env.reset(seed=seed)
    for _ in range(episodes):
        done, episodic_return = False, 0.0
        while not done:
            with torch.inference_mode():
                obs_tensor = torch.as_tensor(np.asarray(obs, dtype=np.float32), device=device)
                action = agent.greedy_action(obs_tensor).cpu().numpy()
            action = (np.clip(action, env.action_space.low, env.action_space.high) if box
                      else int(action) + int(env.action_space.start))
            obs, reward, terminated, truncated, _ = env.step(action)
            episodic_return += float(reward)
            done = terminated or truncated
        returns.append(episodic_return)
        obs, _ = env.reset()
    env.close()
    return returns


def evaluate_checkpoint(args: Args) -> list[float]:
    """--eval-checkpoint: load the policy and normalisation saved at that path and run greedy episodes."""
    env_id, obs_dim, action_space, _, device = check_setup(args)
    checkpoint = load_checkpoint(args.eval_checkpoint, obs_dim, action_space, device)
    agent = Agent(obs_dim, action_space).to(device)
    agent.load_state_dict(checkpoint["agent"])
    video_dir = (os.path.join(os.path.dirname(os.path.abspath(args.eval_checkpoint)), "videos", "eval")
                 if args.capture_video else None)
    returns = evaluate(agent, env_id, checkpoint["obs_rms"], args.eval_episodes, args.seed + 10_000, device,
                       video_dir)
    print(f"eval: mean return {np.mean(returns):.1f} ± {np.std(returns):.1f} over {len(returns)} "
          f"greedy (mean-action) episodes of {args.env_id} (checkpoint at step {checkpoint['global_step']:,})",
          flush=True)
    return returns


def defaults_from_checkpoint(argv: list[str]) -> Args:
    """With --resume or --eval-checkpoint, the checkpoint's saved arguments become the defaults,
    so a run goes on as it was started; flags given on the command line still override them."""
    for i, word in enumerate(argv):
        flag, _, value = word.partition("=")
        if flag in ("--resume", "--eval-checkpoint"):
            path = value or (argv[i + 1] if i + 1 < len(argv) else "")
            try:
                checkpoint = torch.load(path, map_location="cpu", weights_only=False)
                saved = checkpoint["args"] if checkpoint["algorithm"] == ALGORITHM else {}
            except Exception:
                return Args()  # a bad path or another script's checkpoint is reported, once parsed, by load_checkpoint
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
            sys.exit(130 if summary["interrupted"] else 1 if summary["failed"] else 0)
    except UsageError as error:
        print(f"{ALGORITHM}.py: error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("aborted without saving", file=sys.stderr)
        sys.exit(130)
