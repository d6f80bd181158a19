"""Deep deterministic policy gradient (DDPG), with TD3's three corrections as switches.

The idea this file adds to a2c.py: a deterministic policy, moved along the gradient of a learned
action-value Q_φ(s, a). Every other file samples a ~ π_θ(·|s) and weighs ∇log π_θ(a|s) by how good
a was. With continuous actions and a critic that knows Q, there is a shorter way: ask the critic
which way to move the action, and move the policy's output that way. For μ_θ(s) the action of a
deterministic policy, the deterministic policy gradient theorem (Silver et al. 2014) gives

    ∇_θ J(θ) = E_{s~d^μ}[ ∇_a Q^μ(s, a)|_{a=μ_θ(s)} ∇_θ μ_θ(s) ]                 DPG

the chain rule through the critic, averaged over states. It is the limit of the stochastic policy
gradient for a Gaussian π_θ(·|s) = N(μ_θ(s), σ²) as σ → 0. What it does not have is an expectation
over actions: no log π, no ratio ρ_t, so the states may come from another, behaviour policy, with
no importance sampling: off-policy, from a replay buffer D of past transitions. (That averages over
the behaviour's states, not d^μ, and drops a term: the off-policy DPG of Silver et al. 2014, §4.2,
an approximation that works when the two visit similar states.) Here J is maximised by minimising
L(θ) = -Ê_{s∈D}[Q_φ(s, μ_θ(s))], whose gradient is minus the DPG. φ, the parameters of the critic
V_φ in the other files, here are those of Q_φ.

The critic learns Q^μ by regression on one-step targets (Q-learning for a deterministic policy):

    y = r + γ (1 - term) Q_φtarg(s', μ_θtarg(s'))                                 target, held fixed
    L(φ) = Ê_{(s,a,r,s')∈D}[ (Q_φ(s, a) - y)² ]

(s' is the next state.) θtarg and φtarg are target networks, slow copies that trail θ and φ by
Polyak averaging after each actor update, θtarg ← τ θ + (1 - τ) θtarg (τ ≈ 0.005; here τ is
this factor, not a trajectory), so the target does not move with every step of φ. y carries no
gradient. As everywhere here, a time-limit truncation bootstraps from Q_φtarg(s', ·) of the true
final observation s'; only a termination cuts the return. The policy explores by noise on its
action: a = clip(μ_θ(s) + ξ, -1, 1), ξ Gaussian (as TD3) or Ornstein-Uhlenbeck (--noise ou,
temporally correlated, as the DDPG paper had it), after --learning-starts steps of uniformly
random actions.

DDPG's critic overestimates, and the actor climbs the errors. TD3 (Fujimoto et al. 2018) adds three
corrections, each a switch here; with all three on, this file is TD3:
- clipped double Q (--twin-q): two critics, and the target takes the smaller, y = r + γ (1 - term)
  min_i Q_φtarg,i(s', a'). A maximising actor seeks out where Q is too high; the minimum of two
  independent errors is less often too high (overestimation bias).
- delayed policy updates (--policy-frequency 2): the actor and the targets move once per two
  critic steps, so the critic settles before the policy follows it: fewer policy steps on a
  critic that is still wrong, and targets that move less (their variance).
- target policy smoothing (--target-noise 0.2): a' = clip(μ_θtarg(s') + clip(ζ, -c, c), -1, 1),
  ζ ~ N(0, σ_targ²): the target averages Q over a small neighbourhood of a', so a deterministic
  policy cannot exploit a narrow peak of the critic's error.

Actions: the actor's tanh keeps μ_θ(s) in [-1, 1]^d; the replay buffer and the critic see actions
in those units, and only the env's copy is rescaled to its bounds (finite bounds are required).
The files with Gaussian policies store the unclipped sample, for its log-probability; here there
is none, and the buffer stores the clipped action, the one the env executed, for the critic.

Reading map: td_target, critic_loss, actor_loss, smoothed_target_action and polyak_update (the
math), Actor and Critic, Agent (μ_θ, Q_φ and their targets), ddpg_update (one critic step, then
maybe one actor step and the targets), ReplayBuffer, the noise, env_step, then train(): read down
to the PLUMBING banner. tests/test_ddpg.py checks the DPG against the chain rule by hand, the
targets' τ, the minimum of two critics, and truncation against termination.

References:
    Silver, Lever, Heess, Degris, Wierstra, Riedmiller (2014). Deterministic Policy Gradient
        Algorithms. ICML.
    Lillicrap et al. (2016). Continuous control with deep reinforcement learning. arXiv:1509.02971
    Fujimoto, van Hoof, Meger (2018). Addressing Function Approximation Error in Actor-Critic
        Methods (TD3). arXiv:1802.09477

Example:
    python ddpg.py --env-id Pendulum-v1 --seed 1
    python ddpg.py --env-id HalfCheetah-v5 --twin-q --policy-frequency 2 --target-noise 0.2 \\
        --total-timesteps 1000000 --learning-starts 25000          # TD3
"""

import collections
import copy
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
import gymnasium as gym
import tyro
from torch.utils.tensorboard import SummaryWriter

ALGORITHM = "ddpg"  # names this script in its messages, checkpoints and summary.json


@dataclass
class Hyperparameters:
    """What the algorithm does; Args, below the PLUMBING banner, adds the run's own flags."""
    env_id: str = "Pendulum-v1"
    """gymnasium env id, continuous actions; for your own env `module:EnvName-v0` (README.md)"""
    total_timesteps: int = 20_000
    """env steps to train for"""
    learning_rate: float = 1e-3
    """step size of both Adam optimisers, the actor's and the critic's"""
    buffer_size: int = 1_000_000
    """transitions the replay buffer holds; the oldest are overwritten"""
    batch_size: int = 256
    """transitions per gradient step, drawn uniformly from the buffer"""
    gamma: float = 0.99
    """discount factor γ"""
    tau: float = 0.005
    """Polyak factor τ: each update moves the targets this fraction toward the online networks"""
    learning_starts: int = 1_000
    """steps of uniformly random actions first; updates wait until the buffer holds as many"""
    exploration_noise: float = 0.1
    """std of the noise on the actor's action, in half action ranges (with OU: of its steps)"""
    noise: Literal["gaussian", "ou"] = "gaussian"
    """exploration noise: independent Gaussian, or Ornstein-Uhlenbeck (correlated in time)"""
    ou_theta: float = 0.15
    """the OU process's pull toward 0, per step (with --noise ou)"""
    twin_q: bool = False
    """TD3's clipped double Q: two critics, the target takes the smaller of their values"""
    policy_frequency: int = 1
    """update the actor and the targets once per this many critic updates (TD3: 2)"""
    target_noise: float = 0.0
    """TD3's target policy smoothing: std of the target action's noise; 0 is off (TD3: 0.2)"""
    target_noise_clip: float = 0.5
    """the target action's noise is clipped to ±this"""
    hidden_size: int = 256
    """units in each of the two hidden layers of the actor and the critic"""


# ------------------------------------------------------------------------------------- the math
def td_target(rewards, terminations, next_q, gamma: float) -> torch.Tensor:
    """y = r + γ (1 - term) Q_φtarg(s', a'). A truncation keeps the bootstrap; a termination zeroes
    it (torch.where, not (1 - term) ·, since 0 · NaN is NaN)."""
    return rewards + gamma * torch.where(terminations.bool(), 0.0, next_q)


def critic_loss(q_values: list[torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
    """Σ_i Ê[(Q_φ,i(s, a) - y)²], over the one critic (DDPG) or the two (TD3)."""
    return sum(((q - targets) ** 2).mean() for q in q_values)


def actor_loss(agent: "Agent", obs: torch.Tensor) -> torch.Tensor:
    """L(θ) = -Ê_s[Q_φ1(s, μ_θ(s))]: its gradient in θ is minus the DPG, ∇_a Q ∇_θ μ_θ(s). The
    first critic only, as in TD3: the minimum of two is for the target, where errors compound."""
    return -agent.critics[0](obs, agent.actor(obs)).mean()


def smoothed_target_action(actions: torch.Tensor, std: float, clip: float) -> torch.Tensor:
    """a' = clip(μ_θtarg(s') + clip(ζ, -c, c), -1, 1), ζ ~ N(0, std²): TD3's target smoothing."""
    noise = (torch.randn_like(actions) * std).clamp(-clip, clip)
    return (actions + noise).clamp(-1.0, 1.0)


@torch.no_grad()
def polyak_update(target: nn.Module, online: nn.Module, tau: float) -> None:
    """θtarg ← τ θ + (1 - τ) θtarg, parameter by parameter."""
    for p_target, p in zip(target.parameters(), online.parameters()):
        p_target.lerp_(p, tau)  # θtarg + τ (θ - θtarg)


# ------------------------------------------------------------------------------------ the agent
def mlp_relu(in_dim: int, out_dim: int, hidden: int) -> nn.Sequential:
    """Two hidden ReLU layers, torch's default initialisation (as the TD3 paper's code)."""
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, out_dim))


class Actor(nn.Module):
    """μ_θ(s) = tanh(f_θ(s)), in [-1, 1]^d: the deterministic policy."""

    def __init__(self, obs_dim: int, action_dim: int, hidden: int):
        super().__init__()
        self.net = mlp_relu(obs_dim, action_dim, hidden)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(obs))


class Critic(nn.Module):
    """Q_φ(s, a): one MLP on the state and the action side by side."""

    def __init__(self, obs_dim: int, action_dim: int, hidden: int):
        super().__init__()
        self.net = mlp_relu(obs_dim + action_dim, 1, hidden)

    def forward(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([obs, actions], -1)).squeeze(-1)


class Agent(nn.Module):
    """The actor μ_θ, one or two critics Q_φ,i, and a target copy of each (θtarg, φtarg,i),
    which only polyak_update changes."""

    def __init__(self, obs_dim: int, action_dim: int, twin_q: bool, hidden: int = 256):
        super().__init__()
        self.actor = Actor(obs_dim, action_dim, hidden)
        count = 2 if twin_q else 1
        self.critics = nn.ModuleList(Critic(obs_dim, action_dim, hidden) for _ in range(count))
        self.actor_target = copy.deepcopy(self.actor).requires_grad_(False)
        self.critics_target = copy.deepcopy(self.critics).requires_grad_(False)

    def target_q(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Q_φtarg(s', a'), or min_i Q_φtarg,i(s', a') with two critics (clipped double Q)."""
        return torch.stack([critic(obs, actions) for critic in self.critics_target]).min(0).values


# ----------------------------------------------------------------------------------- the update
def ddpg_update(agent: Agent, actor_optimizer: torch.optim.Optimizer,
                critic_optimizer: torch.optim.Optimizer, batch: dict, args: Hyperparameters,
                update_actor: bool) -> dict:
    """One step on L(φ); if update_actor, one on L(θ) and the targets' Polyak step. The losses."""
    with torch.no_grad():
        next_actions = agent.actor_target(batch["next_obs"])  # μ_θtarg(s')
        if args.target_noise > 0:
            next_actions = smoothed_target_action(next_actions, args.target_noise,
                                                  args.target_noise_clip)
        targets = td_target(batch["rewards"], batch["terminations"],
                            agent.target_q(batch["next_obs"], next_actions), args.gamma)
    q_values = [critic(batch["obs"], batch["actions"]) for critic in agent.critics]
    q_loss = critic_loss(q_values, targets)
    if not torch.isfinite(q_loss):
        raise FloatingPointError(f"critic loss is {q_loss.item()}")
    critic_optimizer.zero_grad(set_to_none=True)
    q_loss.backward()
    critic_optimizer.step()
    losses = {"value_loss": q_loss.item(), "q_value": q_values[0].mean().item()}
    if update_actor:
        pi_loss = actor_loss(agent, batch["obs"])
        if not torch.isfinite(pi_loss):
            raise FloatingPointError(f"actor loss is {pi_loss.item()}")
        actor_optimizer.zero_grad(set_to_none=True)
        pi_loss.backward()  # also fills the critic's .grad, unused: its next zero_grad clears it
        actor_optimizer.step()
        polyak_update(agent.actor_target, agent.actor, args.tau)
        polyak_update(agent.critics_target, agent.critics, args.tau)
        losses["policy_loss"] = pi_loss.item()
    return losses


# ---------------------------------------------------------------------------------- the rollout
class ReplayBuffer:
    """The last `capacity` transitions (s, a, r, s', term), in a ring: a new one overwrites the
    oldest. s' is the true successor (the final observation where an episode ended)."""

    def __init__(self, capacity: int, obs_dim: int, action_dim: int):
        self.obs = np.zeros((capacity, obs_dim), np.float32)
        self.next_obs = np.zeros((capacity, obs_dim), np.float32)
        self.actions = np.zeros((capacity, action_dim), np.float32)
        self.rewards = np.zeros(capacity, np.float32)
        self.terminations = np.zeros(capacity, np.float32)
        self.capacity, self.position, self.size = capacity, 0, 0

    def add(self, obs, action, reward, next_obs, terminated) -> None:
        i = self.position
        self.obs[i], self.actions[i], self.rewards[i] = obs, action, reward
        self.next_obs[i], self.terminations[i] = next_obs, terminated
        self.position, self.size = (i + 1) % self.capacity, min(self.size + 1, self.capacity)

    def sample(self, batch_size: int, device: torch.device) -> dict:
        """batch_size transitions drawn uniformly, with replacement, from those held."""
        i = np.random.randint(0, self.size, size=batch_size)
        batch = {"obs": self.obs[i], "actions": self.actions[i], "rewards": self.rewards[i],
                 "next_obs": self.next_obs[i], "terminations": self.terminations[i]}
        return {key: torch.from_numpy(value).to(device) for key, value in batch.items()}


class GaussianNoise:
    """ξ ~ N(0, σ²) each step, independently."""

    def __init__(self, std: float, action_dim: int):
        self.std, self.action_dim = std, action_dim

    def sample(self) -> np.ndarray:
        return np.random.normal(0.0, self.std, self.action_dim).astype(np.float32)

    def reset(self) -> None:
        pass


class OrnsteinUhlenbeckNoise(GaussianNoise):
    """ξ ← ξ - θ_OU ξ + σ z, z ~ N(0, I): noise that drifts back to 0, correlated from step to
    step, so exploration keeps a direction for a while (DDPG: θ_OU 0.15). Back to 0 each episode.
    σ is the std of each step's increment; ξ settles at σ / √(θ_OU (2 - θ_OU)), 1.9 σ for 0.15."""

    def __init__(self, std: float, action_dim: int, theta: float):
        super().__init__(std, action_dim)
        self.theta, self.state = theta, np.zeros(action_dim, np.float32)

    def sample(self) -> np.ndarray:
        self.state = self.state - self.theta * self.state + super().sample()  # + σ z
        return self.state.copy()

    def reset(self) -> None:
        self.state = np.zeros(self.action_dim, np.float32)


def make_noise(args: Hyperparameters, action_dim: int) -> GaussianNoise:
    if args.noise == "ou":
        return OrnsteinUhlenbeckNoise(args.exploration_noise, action_dim, args.ou_theta)
    return GaussianNoise(args.exploration_noise, action_dim)


def make_env(env_id: str, video_dir: Optional[str] = None):
    """A thunk building one env that records its episodes' statistics (and, with a video_dir,
    videos of them); Discrete, Tuple and Dict observations become one vector."""
    def thunk():
        env = gym.make(env_id, render_mode="rgb_array") if video_dir else gym.make(env_id)
        if video_dir:
            env = gym.wrappers.RecordVideo(env, video_dir, disable_logger=True)
        if not isinstance(env.observation_space, gym.spaces.Box):
            env = gym.wrappers.FlattenObservation(env)
        return gym.wrappers.RecordEpisodeStatistics(env)
    return thunk


def make_vec_env(env_id: str, video_dir: Optional[str] = None) -> gym.vector.VectorEnv:
    """One env, as a vector env that resets in the same step (final_obs at hand)."""
    return gym.vector.SyncVectorEnv([make_env(env_id, video_dir)],
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)


def successor_obs(next_obs: np.ndarray, info: dict) -> np.ndarray:
    """The true s_{t+1} of each env. Where an episode just ended, the vector env has already
    reset and returned the next episode's first observation; the final one is in info."""
    if "_final_obs" not in info:
        return next_obs
    successor = next_obs.copy()
    for i in np.flatnonzero(info["_final_obs"]):
        successor[i] = info["final_obs"][i]
    return successor


def env_step(envs: gym.vector.VectorEnv, agent: Agent, obs: np.ndarray, buffer: ReplayBuffer,
             noise: Optional[GaussianNoise], device: torch.device, episode_ended) -> np.ndarray:
    """One step: a = clip(μ_θ(s) + ξ, -1, 1), or a uniformly random action without noise
    (before learning starts); the env gets a rescaled to its bounds; the transition goes into
    the buffer. Returns the next observations; episode_ended(env, return, length) hears of ends."""
    space = envs.single_action_space
    if noise is None:
        action = np.random.uniform(-1.0, 1.0, (envs.num_envs, space.shape[0])).astype(np.float32)
    else:
        with torch.inference_mode():
            action = agent.actor(torch.as_tensor(obs, dtype=torch.float32, device=device))
        action = np.clip(action.cpu().numpy() + noise.sample(), -1.0, 1.0)  # one env: ξ broadcasts
    env_action = space.low + (action + 1.0) * 0.5 * (space.high - space.low)  # [-1, 1] -> bounds
    next_obs, reward, terminated, truncated, info = envs.step(env_action)
    successor = successor_obs(next_obs, info)
    for i in range(envs.num_envs):
        buffer.add(obs[i], action[i], reward[i], successor[i], terminated[i])
    if "_episode" in info.get("final_info", {}):
        episode = info["final_info"]["episode"]
        for i in np.flatnonzero(info["final_info"]["_episode"]):
            episode_ended(int(i), float(episode["r"][i]), int(episode["l"][i]))
            if noise is not None:
                noise.reset()
    return next_obs


# --------------------------------------------------------------------------------------- train
def train(args: "Args") -> dict:
    """Train DDPG (TD3 with its switches on) as args say; return the run's summary. Run, below
    the PLUMBING banner, does the rest: checks, seeding, resuming, logging, Ctrl-C, the
    checkpoint, evaluation."""
    run = Run(args)
    envs = make_vec_env(run.env_id, run.video_dir)
    agent = Agent(run.obs_dim, run.action_dim, args.twin_q, args.hidden_size).to(run.device)
    adam = dict(lr=args.learning_rate, foreach=True)  # foreach: all tensors at once, sooner on CPU
    actor_optimizer = torch.optim.Adam(agent.actor.parameters(), **adam)
    critic_optimizer = torch.optim.Adam(agent.critics.parameters(), **adam)
    buffer = ReplayBuffer(args.buffer_size, run.obs_dim, run.action_dim)
    noise = make_noise(args, run.action_dim)
    obs = run.start(envs, agent, actor_optimizer, critic_optimizer, buffer)  # resumes; resets envs
    try:
        for step in run.steps():
            random_phase = step < args.learning_starts  # uniformly random actions, no noise
            obs = env_step(envs, agent, obs, buffer, None if random_phase else noise, run.device,
                           run.episode_ended)
            losses = None
            if buffer.size >= max(args.learning_starts, 1):  # (at least one transition to draw)
                batch = buffer.sample(args.batch_size, run.device)
                losses = ddpg_update(agent, actor_optimizer, critic_optimizer, batch, args,
                                     update_actor=step % args.policy_frequency == 0)
            run.log(losses)
    except FloatingPointError as error:  # a non-finite loss: stop, and keep the last good weights
        run.fail(error)
    return run.finish()


# ==== PLUMBING: nothing below changes what the algorithm computes ====
@dataclass
class Args(Hyperparameters):
    exp_name: str = ALGORITHM
    """name of the experiment: it names the run directory and the checkpoint file"""
    seed: int = 1
    """seed of python, numpy, torch and the envs"""
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
    """record videos of the env's episodes into the run's videos/ (needs moviepy)"""
    save_model: bool = True
    """save a checkpoint at the end of training, on Ctrl-C or SIGTERM, and every --checkpoint-every"""
    save_buffer: bool = False
    """put the replay buffer in the checkpoint too (large: 1M HalfCheetah-v5 transitions take some 170 MB); without
    it, --resume starts with an empty buffer and learns again once the policy has refilled --learning-starts"""
    checkpoint_every: float = 600.0
    """seconds of training between checkpoints (with summary.json), so a run killed outright loses at
    most that much; 0 saves only at the end and on Ctrl-C or SIGTERM"""
    resume: Optional[str] = None
    """checkpoint, or the run directory holding it, to continue training from, up to --total-timesteps"""
    eval_checkpoint: Optional[str] = None
    """evaluate this checkpoint instead of training"""
    eval_episodes: int = 10
    """episodes to evaluate with after training or with --eval-checkpoint"""
    eval_greedy: bool = True
    """evaluate with μ_θ(s) itself; --no-eval-greedy adds Gaussian noise of std --exploration-noise"""


class Run:
    """All of a training run that is not the algorithm: the checks, seeding, resuming, the run
    directory, tensorboard (and wandb), the progress line, Ctrl-C, the checkpoint, evaluation
    and summary.json. train() calls it at a few points; each method says when."""

    def __init__(self, args: Args):
        """Before anything is built: check the flags and the env, load a checkpoint to resume,
        seed, make the run directory and its writer."""
        validate_args(args, FLAG_RULES)
        for flag in ("batch_size", "learning_starts"):  # or no update could ever be made
            if getattr(args, flag) > args.buffer_size:
                raise UsageError(f"--{flag.replace('_', '-')} {getattr(args, flag)} is more than the replay buffer "
                                 f"holds (--buffer-size {args.buffer_size})")
        self.args = args
        self.env_id, self.obs_dim, self.action_space, self.threshold = check_env(args.env_id, args.capture_video)
        self.action_dim = self.action_space.shape[0]
        torch.set_num_threads(args.torch_threads)
        self.device = torch.device("cuda" if args.cuda and torch.cuda.is_available() else "cpu")
        self.checkpoint = None
        if args.resume:
            self.checkpoint = load_checkpoint(args.resume, self.obs_dim, self.action_space, self.device)
            check_resume(self.checkpoint, args, ("twin_q", "hidden_size"))
        self.global_step = self.checkpoint["global_step"] if self.checkpoint else 0
        self.stats = self.checkpoint["stats"] if self.checkpoint else {
            "recent_returns": [], "steps_to_threshold": None, "seconds_to_threshold": None, "wall_seconds": 0.0}
        self.previous_seconds = self.stats["wall_seconds"]  # of training, before this run went on
        # A resumed run goes on with fresh random numbers, not those its start drew.
        seed_everything(args.seed + self.global_step, args.torch_deterministic)
        self.run_dir = make_run_dir(args)
        self.writer = open_writer(args, self.run_dir)
        self.video_dir = os.path.join(self.run_dir, "videos") if args.capture_video else None
        self.recent_returns = collections.deque(self.stats["recent_returns"], maxlen=20)
        self.losses = {}  # the last update's, logged every 500 steps or so
        self.logged_step = -math.inf  # the step at which the losses were last logged
        self.interrupted = self.failed = False
        self.stopped_by = None  # the signal that stopped the run, if one did

    def start(self, envs: gym.vector.VectorEnv, agent: Agent, actor_optimizer: torch.optim.Optimizer,
              critic_optimizer: torch.optim.Optimizer, buffer: ReplayBuffer) -> np.ndarray:
        """Once the envs, the agent, the optimisers and the buffer exist: restore them from the
        checkpoint (the buffer only if it was saved), reset the envs; return their first observations."""
        self.envs, self.agent, self.buffer = envs, agent, buffer
        self.optimizers = {"actor_optimizer": actor_optimizer, "critic_optimizer": critic_optimizer}
        if self.checkpoint:
            agent.load_state_dict(self.checkpoint["agent"])
            for name, optimizer in self.optimizers.items():
                optimizer.load_state_dict(self.checkpoint[name])
                optimizer.param_groups[0]["lr"] = self.args.learning_rate  # the flag, not the saved rate
            saved = self.checkpoint.get("buffer")
            if saved:  # saved oldest first: the newest as many as fit, in order
                n = min(saved["size"], buffer.capacity)
                for key in ("obs", "actions", "rewards", "next_obs", "terminations"):
                    getattr(buffer, key)[:n] = saved[key][saved["size"] - n:]
                buffer.size, buffer.position = n, n % buffer.capacity
            elif self.args.learning_starts:
                print(f"the replay buffer starts empty (--save-buffer keeps it): updates begin again once it holds "
                      f"{self.args.learning_starts:,} transitions", flush=True)
        self.checkpoint = None  # all restored: let a saved buffer's memory go
        obs, _ = envs.reset(seed=self.args.seed + self.global_step)
        return obs

    def steps(self):
        """The env steps still to run, by index; after a Ctrl-C or SIGTERM the loop ends with the
        step in progress. A progress line every few seconds."""
        self.start_time = self.last_print = self.last_save = time.perf_counter()
        self.start_step = self.global_step
        with StopOnSignal() as self.signals:
            print(f"DDPG on {self.args.env_id}: {self.args.total_timesteps - self.global_step:,} steps on "
                  f"{self.device}, {len(self.agent.critics)} critic(s); logging to {self.run_dir}", flush=True)
            for step in range(self.global_step, self.args.total_timesteps):
                yield step
                if self.signals.requested and step < self.args.total_timesteps - 1:
                    self.interrupted, self.stopped_by = True, self.signals.requested
                    return

    def episode_ended(self, env: int, episodic_return: float, length: int) -> None:
        """Called by env_step for each episode that ends; logs it, and notes when the mean return
        of the last 20 first reached the env's threshold."""
        step = self.global_step + 1
        self.recent_returns.append(episodic_return)
        self.writer.add_scalar("charts/episodic_return", episodic_return, step)
        self.writer.add_scalar("charts/episodic_length", length, step)
        if (self.stats["steps_to_threshold"] is None and self.threshold is not None
                and len(self.recent_returns) == self.recent_returns.maxlen
                and np.mean(self.recent_returns) >= self.threshold):
            self.stats["steps_to_threshold"] = step
            self.stats["seconds_to_threshold"] = self.previous_seconds + time.perf_counter() - self.start_time

    def log(self, losses: Optional[dict]) -> None:
        """After each step: every 500 steps or so, the last update's losses, the learning rate,
        steps/s; a progress line every few seconds."""
        self.global_step += 1
        self.losses = {**self.losses, **(losses or {})}  # a critic-only update keeps the last policy_loss
        total, stop = self.args.total_timesteps, self.signals.requested
        if self.global_step - self.logged_step < 500 and self.global_step < total and not stop:
            return  # the rest is slow (tensorboard takes some 40 µs a scalar): not at every step
        now = time.perf_counter()
        sps = (self.global_step - self.start_step) / (now - self.start_time)
        self.logged_step = self.global_step
        self.writer.add_scalar("charts/learning_rate", self.args.learning_rate, self.global_step)
        self.writer.add_scalar("charts/SPS", sps, self.global_step)
        for key, value in self.losses.items():
            self.writer.add_scalar(f"losses/{key}", value, self.global_step)
        if now - self.last_print >= 5.0 or self.global_step >= total or stop:
            self.last_print = now
            print_progress(self.global_step, total, self.recent_returns, sps)
        if self.args.checkpoint_every and now - self.last_save >= self.args.checkpoint_every:
            write_summary(self, [], self.save(), in_progress=True)  # what a run killed now goes on from

    def fail(self, error: FloatingPointError) -> None:
        """A non-finite loss: stop. The weights on disk are the last good ones."""
        print(f"{ALGORITHM}.py: error: training stopped at step {self.global_step}: {error}", file=sys.stderr)
        self.failed = True

    def save(self) -> Optional[str]:
        """The checkpoint as the run stands: at the end, on Ctrl-C or SIGTERM, and every
        --checkpoint-every seconds. Never over a good one with weights that are not finite. Its
        path, or None if not saved."""
        self.last_save = time.perf_counter()
        self.stats.update(recent_returns=list(self.recent_returns),
                          wall_seconds=self.previous_seconds + self.last_save - self.start_time)
        if not (self.args.save_model and all(torch.isfinite(p).all() for p in self.agent.state_dict().values())):
            return None
        path = os.path.join(self.run_dir, f"{self.args.exp_name}.pt")
        buffer = None
        if self.args.save_buffer:  # oldest first, so that adding them in order rebuilds the ring
            b = self.buffer
            order = np.roll(np.arange(b.size), -b.position if b.size == b.capacity else 0)
            buffer = {"size": b.size, **{key: getattr(b, key)[order] for key in
                                         ("obs", "actions", "rewards", "next_obs", "terminations")}}
        save_checkpoint(path, {
            "algorithm": ALGORITHM, "obs_dim": self.obs_dim, "action_space": describe(self.action_space),
            "agent": self.agent.state_dict(), **{name: o.state_dict() for name, o in self.optimizers.items()},
            "buffer": buffer, "global_step": self.global_step, "stats": self.stats, "args": asdict(self.args)})
        return path

    def finish(self) -> dict:
        """After the last step: save the checkpoint, evaluate, write summary.json; return it."""
        self.envs.close()
        checkpoint = self.save()
        eval_returns = []
        if not (self.interrupted or self.failed):
            try:
                noise = 0.0 if self.args.eval_greedy else self.args.exploration_noise
                eval_returns = evaluate(self.agent, self.env_id, self.args.eval_episodes, self.args.seed + 10_000,
                                        self.device, noise)
            except KeyboardInterrupt:  # Ctrl-C: the checkpoint is saved, only the evaluation is cut short
                self.stopped_by = "SIGINT"
        summary = write_summary(self, eval_returns, checkpoint)
        report_end(self, summary, eval_returns)
        return summary


# ----------------------------------------------------------------------- checks of flags and env
class UsageError(Exception):
    """A mistake in the flags or the env: reported as one line on stderr, exit status 2."""


# What a flag's value must satisfy, by kind; FLAG_RULES gives each checked flag its kind.
RULES = {
    "count": (lambda v: v > 0, "be positive"),
    "fraction": (lambda v: 0.0 <= v <= 1.0, "lie in [0, 1]"),
    "open fraction": (lambda v: 0.0 < v < 1.0, "lie strictly between 0 and 1"),
    "positive": (lambda v: v > 0 and math.isfinite(v), "be a positive finite number"),
    "non-negative": (lambda v: v >= 0 and math.isfinite(v), "be a finite number ≥ 0"),
}
FLAG_RULES = {
    "total_timesteps": "count", "buffer_size": "count", "batch_size": "count", "eval_episodes": "count",
    "torch_threads": "count", "policy_frequency": "count", "hidden_size": "count", "gamma": "fraction",
    "tau": "fraction", "ou_theta": "open fraction", "learning_rate": "positive", "learning_starts": "non-negative",
    "exploration_noise": "non-negative", "target_noise": "non-negative", "target_noise_clip": "non-negative",
    "checkpoint_every": "non-negative",
}


def validate_args(args: Args, flag_rules: dict) -> None:
    """Raise UsageError for a flag value that cannot work, before anything is built."""
    for name, kind in flag_rules.items():
        test, requirement = RULES[kind]
        if getattr(args, name) is not None and not test(getattr(args, name)):
            raise UsageError(f"--{name.replace('_', '-')} must {requirement}, got {getattr(args, name)}")
    if args.resume and args.eval_checkpoint:
        raise UsageError("give either --resume or --eval-checkpoint, not both")
    if "/" in args.exp_name or os.sep in args.exp_name:
        raise UsageError(f"--exp-name {args.exp_name} names the checkpoint file: it cannot hold '/'")
    for flag, package in (("capture_video", "moviepy"), ("track", "wandb")):
        if getattr(args, flag):
            try:
                importlib.import_module(package)
            except ImportError:
                raise UsageError(f"--{flag.replace('_', '-')} needs {package}: pip install {package}") from None


def resolve_env_id(env_id: str) -> str:
    """Return an id gymnasium.make accepts; raise UsageError if there is none.

    `module:EnvName-v0` is gymnasium's own form: importing the module registers the env. As a
    convenience, `module:ClassName` naming a gymnasium.Env subclass is registered on the fly, as
    `module.ClassName`.
    """
    module_name, _, name = env_id.rpartition(":")
    try:
        if module_name:
            env_class = getattr(importlib.import_module(module_name), name, None)
            if isinstance(env_class, type) and issubclass(env_class, gym.Env):
                name = f"{module_name}.{name}"  # not `name`: the module may register `name-v0`
                if name not in gym.registry:
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
    if isinstance(action_space, gym.spaces.Discrete):
        raise UsageError(f"{name} has discrete actions; {ALGORITHM}.py needs a continuous action space, "
                         "use ppo.py or a2c.py")
    if not (isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1):
        raise UsageError(f"{name} has a {type(action_space).__name__} action space; {ALGORITHM}.py needs "
                         "a flat Box (vector) one")
    if not (np.isfinite(action_space.low).all() and np.isfinite(action_space.high).all()):
        raise UsageError(f"{name} has unbounded actions ({action_space}); {ALGORITHM}.py squashes its actions "
                         "into the bounds, which must be finite")
    problem = observation_problem(env.observation_space)
    if problem:
        raise UsageError(f"{name} observes {problem}; {ALGORITHM}.py uses MLPs on vector observations: a "
                         "flat Box, Discrete, MultiDiscrete, MultiBinary, or a Tuple or Dict of them")
    return gym.spaces.flatdim(env.observation_space), action_space


def observation_problem(space: gym.Space) -> Optional[str]:
    """Why make_env cannot turn observations from `space` into one vector, or None if it can: it
    flattens Discrete (one-hot), MultiDiscrete, MultiBinary and flat Boxes, and Tuples and Dicts of them."""
    if isinstance(space, gym.spaces.Box):
        return None if len(space.shape) == 1 else f"images or matrices ({space})"
    if isinstance(space, (gym.spaces.Discrete, gym.spaces.MultiDiscrete, gym.spaces.MultiBinary)):
        return None
    if isinstance(space, (gym.spaces.Tuple, gym.spaces.Dict)):
        parts = space.spaces.values() if isinstance(space, gym.spaces.Dict) else space.spaces
        return next(filter(None, map(observation_problem, parts)), None)
    return f"a {type(space).__name__} space ({space})"


def check_env(env_id: str, video: bool = False) -> tuple[str, int, gym.Space, Optional[float]]:
    """(id for gymnasium.make, observation size, action space, reward threshold or None) of the
    env --env-id names; UsageError if there is none, this script cannot train on it, or video is
    asked for and the env cannot render a frame."""
    if video and not any(os.environ.get(name) for name in ("MUJOCO_GL", "DISPLAY", "WAYLAND_DISPLAY")):
        os.environ["MUJOCO_GL"] = "egl"  # no display: MuJoCo renders through EGL (set before it loads)
    env_id = resolve_env_id(env_id)
    try:
        probe = gym.make(env_id, **({"render_mode": "rgb_array"} if video else {}))
        if video:
            probe.reset(seed=0)
            probe.render()
    except Exception as e:
        if not video:
            raise
        raise UsageError(f"--capture-video: {env_id} cannot render ({type(e).__name__}: {e}); MuJoCo "
                         "with no display needs EGL (Debian: apt install libegl1 libegl-mesa0) and "
                         "MUJOCO_GL=egl, or OSMesa (libosmesa6 and MUJOCO_GL=osmesa)") from None
    obs_dim, action_space = check_spaces(probe)
    threshold = probe.spec.reward_threshold if probe.spec else None
    probe.close()
    return env_id, obs_dim, action_space, threshold


def check_resume(checkpoint: dict, args: Args, same: tuple[str, ...]) -> None:
    """A checkpoint resumes only with the flags in `same` as they were, and short of its end."""
    for name in same:
        if checkpoint["args"][name] != getattr(args, name):
            raise UsageError(f"checkpoint {args.resume} was trained with --{name.replace('_', '-')} "
                             f"{checkpoint['args'][name]}; resume with the same")
    if checkpoint["global_step"] >= args.total_timesteps:
        raise UsageError(f"checkpoint {args.resume} is already at step {checkpoint['global_step']:,}; pass a "
                         "larger --total-timesteps to train on")


# --------------------------------------------------------------------------------- checkpoints
def describe(action_space: gym.Space) -> str:
    """How a checkpoint records the action space it was trained on, e.g. 'Discrete(2)' or 'Box(6,)'."""
    if isinstance(action_space, gym.spaces.Discrete):
        start = f", start={action_space.start}" if action_space.start else ""
        return f"Discrete({action_space.n}{start})"
    return f"Box{action_space.shape}"


class SaveError(Exception):
    """A file of the run could not be written (a full disk, a directory not writable): reported as
    one line on stderr, exit status 1. What was saved before it is intact."""


def write_atomically(path: str, write) -> None:
    """write(a temporary file), then rename it over path: a crash or a full disk in the middle
    leaves the file that was there whole. SaveError, naming the path and the problem, otherwise."""
    try:
        write(path + ".tmp")
        os.replace(path + ".tmp", path)
    except (OSError, RuntimeError) as e:  # torch.save reports a failed write as a RuntimeError
        if os.path.exists(path + ".tmp"):
            os.remove(path + ".tmp")
        raise SaveError(f"cannot write {path}: {getattr(e, 'strerror', None) or str(e).splitlines()[0]}") from None


def save_checkpoint(path: str, state: dict) -> None:
    write_atomically(path, lambda tmp: torch.save(state, tmp))


def checkpoint_file(path: str) -> str:
    """The checkpoint --resume or --eval-checkpoint names: the file, or the newest .pt file in the
    run directory given; UsageError if there is none."""
    if os.path.isdir(path):
        found = sorted((os.path.join(path, name) for name in os.listdir(path) if name.endswith(".pt")),
                       key=os.path.getmtime)
        if not found:
            raise UsageError(f"{path} holds no checkpoint (.pt file)")
        return found[-1]
    if not os.path.isfile(path):
        raise UsageError(f"checkpoint {path} does not exist")
    return path


def load_checkpoint(path: str, obs_dim: int, action_space: gym.Space, device: torch.device) -> dict:
    """Load a checkpoint, checking that it exists, is whole and fits the env; UsageError otherwise."""
    path = checkpoint_file(path)
    try:
        checkpoint = torch.load(path, map_location=device, weights_only=False)
        trained = (checkpoint["obs_dim"], checkpoint["action_space"])
        if checkpoint["algorithm"] != ALGORITHM:
            raise ValueError(f"it was written by {checkpoint['algorithm']}.py")
    except Exception as e:
        raise UsageError(f"{path} is not a whole checkpoint of {ALGORITHM}.py ({type(e).__name__}: "
                         f"{str(e).split('. ')[0]})") from None
    if trained != (obs_dim, describe(action_space)):
        raise UsageError(f"checkpoint {path} was trained on {checkpoint['args']['env_id']} "
                         f"({trained[0]} observations, actions {trained[1]}), which does not match this env "
                         f"({obs_dim}, {describe(action_space)}); pass --env-id {checkpoint['args']['env_id']}")
    return checkpoint


def defaults_from_checkpoint(argv: list[str]) -> Args:
    """With --resume or --eval-checkpoint, the checkpoint's saved arguments become the defaults,
    so a run goes on as it was started; flags given on the command line still override them."""
    for i, word in enumerate(argv):
        flag, _, value = word.partition("=")
        if flag in ("--resume", "--eval-checkpoint"):
            path = value or (argv[i + 1] if i + 1 < len(argv) else "")
            try:
                checkpoint = torch.load(checkpoint_file(path), map_location="cpu", weights_only=False)
                saved = checkpoint["args"] if checkpoint["algorithm"] == ALGORITHM else {}
            except Exception:
                return Args()  # a bad path or another script's checkpoint is reported, once parsed, by load_checkpoint
            fields = Args.__dataclass_fields__
            return Args(**{k: v for k, v in saved.items() if k in fields and k not in ("resume", "eval_checkpoint")})
    return Args()


# ------------------------------------------------------------------------------------- helpers
def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # needed by CUDA for determinism
    torch.use_deterministic_algorithms(deterministic)
    torch.backends.cudnn.deterministic = deterministic


def make_run_dir(args: Args) -> str:
    """runs/{env_id}__{exp_name}__{seed}__{unix time}, or a resumed checkpoint's own directory."""
    if args.resume:
        return os.path.dirname(os.path.abspath(checkpoint_file(args.resume)))
    safe_id = args.env_id.replace("/", "_").replace(":", "_")
    run_dir = os.path.join(args.runs_dir, f"{safe_id}__{args.exp_name}__{args.seed}__{int(time.time())}")
    try:
        os.makedirs(run_dir, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot make the run directory {run_dir}: {e.strerror}") from None
    return run_dir


class Writer(SummaryWriter):
    """tensorboard's writer, reporting a write that fails (a full disk) as a SaveError. Its thread
    that writes in the background dies quietly then: the next call says what went wrong."""

    def add_scalar(self, *args, **kwargs):
        try:
            super().add_scalar(*args, **kwargs)
        except OSError as e:
            raise SaveError(f"cannot write the tensorboard log in {self.log_dir}: {e.strerror}") from None


def quiet_full_disk(hook_args) -> None:
    """threading.excepthook, silent about a thread that failed to write (Writer reports it)."""
    if not issubclass(hook_args.exc_type, OSError):
        sys.__excepthook__(hook_args.exc_type, hook_args.exc_value, hook_args.exc_traceback)


def open_writer(args: Args, run_dir: str) -> SummaryWriter:
    """Tensorboard's writer for the run, with the flags as text; wandb mirrors it with --track."""
    if args.track:
        import wandb
        wandb.init(project=args.wandb_project_name, entity=args.wandb_entity, sync_tensorboard=True,
                   config=asdict(args), name=os.path.basename(run_dir), save_code=True)
    import threading
    threading.excepthook = quiet_full_disk
    try:
        writer = Writer(run_dir)
        writer.add_text("hyperparameters", "|param|value|\n|-|-|\n" +
                        "\n".join(f"|{key}|{value}|" for key, value in asdict(args).items()))
    except OSError as e:
        raise SaveError(f"cannot write the tensorboard log in {run_dir}: {e.strerror}") from None
    return writer


def format_seconds(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


def print_progress(step: int, total: int, recent_returns, sps: float) -> None:
    recent = f"{np.mean(recent_returns):8.1f}" if recent_returns else "     n/a"
    print(f"step {step:>9,} ({100 * min(step / total, 1):3.0f}%) | return {recent} (last {len(recent_returns)})"
          f" | {sps:7,.0f} steps/s | ETA {format_seconds(max(total - step, 0) / max(sps, 1e-9))}", flush=True)


class StopOnSignal:
    """While active, the first Ctrl-C (SIGINT) or SIGTERM only asks the loop to stop: it saves a
    checkpoint at the end of the current update. A second one interrupts at once."""

    def __enter__(self):
        self.requested = None  # the name of the signal that asked, once one has
        self.previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)}
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name
        what = "Ctrl-C" if signum == signal.SIGINT else "SIGTERM"
        print(f"\n{what}: stopping after this update (again to abort without saving)", flush=True)

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            if sig == signal.SIGINT and handler == signal.SIG_IGN:  # ignored by whoever started us (`&` in a
                handler = signal.default_int_handler  # script): it stopped training, so it stops the evaluation too
            signal.signal(sig, handler)


def write_summary(run: Run, eval_returns: list[float], checkpoint: Optional[str], extra: Optional[dict] = None,
                  in_progress: bool = False) -> dict:
    """summary.json, what the benchmark and other tools read, with an algorithm's own fields in
    extra; in_progress while training goes on (a run killed then reads as interrupted)."""
    recent, seconds = run.recent_returns, run.last_save - run.start_time
    summary = {
        "algorithm": ALGORITHM, "env_id": run.args.env_id, "seed": run.args.seed, "global_step": run.global_step,
        "wall_seconds": run.stats["wall_seconds"], "sps": (run.global_step - run.start_step) / max(seconds, 1e-9),
        "final_return": float(np.mean(recent)) if recent else None,
        "eval_return": float(np.mean(eval_returns)) if eval_returns else None,
        "eval_return_std": float(np.std(eval_returns)) if eval_returns else None,
        "eval_mode": "greedy" if run.args.eval_greedy else "sampled",
        "reward_threshold": run.threshold, "steps_to_threshold": run.stats["steps_to_threshold"],
        "seconds_to_threshold": run.stats["seconds_to_threshold"], "in_progress": in_progress,
        "interrupted": run.interrupted or in_progress, "signal": run.stopped_by, "failed": run.failed,
        "checkpoint": checkpoint, "run_dir": run.run_dir, **(extra or {}), "args": asdict(run.args),
    }

    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(summary, f, indent=2)
    write_atomically(os.path.join(run.run_dir, "summary.json"), write)
    return summary


def report_end(run: Run, summary: dict, eval_returns: list[float]) -> None:
    """The run's last words: the evaluation to tensorboard, the writers closed, a line on the terminal."""
    for i, episodic_return in enumerate(eval_returns):
        run.writer.add_scalar("eval/episodic_return", episodic_return, i)
    run.writer.close()
    if run.args.track:
        import wandb
        wandb.finish()
    if run.interrupted:
        resume_hint = f"; continue with --resume {summary['checkpoint']}" if summary["checkpoint"] else ""
        print(f"interrupted at step {run.global_step:,}{resume_hint}", flush=True)
    elif run.stopped_by:
        print(f"evaluation stopped by Ctrl-C; training finished at step {run.global_step:,}, checkpoint "
              f"{summary['checkpoint']}", flush=True)
    elif not run.failed:
        final = f"{summary['final_return']:.1f}" if run.recent_returns else "no episode finished"
        print(f"eval: mean return {summary['eval_return']:.1f} ± {summary['eval_return_std']:.1f} over "
              f"{len(eval_returns)} {acting(run.args)} episodes (training: {final}, "
              f"{summary['wall_seconds']:.1f}s, {summary['sps']:,.0f} steps/s)", flush=True)


# ------------------------------------------------------------------------------------ evaluation
GREEDY = "deterministic (μ_θ(s))"  # how evaluation acts, in messages: the policy itself, no noise


def acting(args: Args) -> str:
    """How evaluation acts, in messages."""
    return GREEDY if args.eval_greedy else "sampled"


def evaluate(agent: Agent, env_id: str, episodes: int, seed: int, device: torch.device, noise: float = 0.0,
             video_dir: Optional[str] = None) -> list[float]:
    """Raw returns of `episodes` episodes acting by μ_θ(s), with Gaussian noise of std `noise` if
    it is not 0 (in the actor's [-1, 1] units), rescaled to the env's bounds."""
    env = make_env(env_id, video_dir=video_dir)()
    rng = np.random.default_rng(seed)  # the noise is the same each time
    space = env.action_space
    returns = []
    obs, _ = env.reset(seed=seed)
    for _ in range(episodes):
        done, episodic_return = False, 0.0
        while not done:
            with torch.inference_mode():
                obs_tensor = torch.as_tensor(np.asarray(obs, dtype=np.float32), device=device)
                action = agent.actor(obs_tensor).cpu().numpy()
            if noise:
                action = np.clip(action + rng.normal(0.0, noise, action.shape), -1.0, 1.0)
            env_action = space.low + (action + 1.0) * 0.5 * (space.high - space.low)  # [-1, 1] -> bounds
            obs, reward, terminated, truncated, _ = env.step(env_action)
            episodic_return += float(reward)
            done = terminated or truncated
        returns.append(episodic_return)
        obs, _ = env.reset()
    env.close()
    return returns


def evaluate_checkpoint(args: Args) -> list[float]:
    """--eval-checkpoint: load the policy saved at that path and run episodes."""
    validate_args(args, FLAG_RULES)
    env_id, obs_dim, action_space, _ = check_env(args.env_id, args.capture_video)
    torch.set_num_threads(args.torch_threads)
    device = torch.device("cuda" if args.cuda and torch.cuda.is_available() else "cpu")
    checkpoint = load_checkpoint(args.eval_checkpoint, obs_dim, action_space, device)
    saved = checkpoint["args"]
    agent = Agent(obs_dim, action_space.shape[0], saved["twin_q"], saved["hidden_size"]).to(device)
    agent.load_state_dict(checkpoint["agent"])
    video_dir = (os.path.join(os.path.dirname(os.path.abspath(checkpoint_file(args.eval_checkpoint))), "videos", "eval")
                 if args.capture_video else None)
    returns = evaluate(agent, env_id, args.eval_episodes, args.seed + 10_000, device,
                       0.0 if args.eval_greedy else args.exploration_noise, video_dir)
    print(f"eval: mean return {np.mean(returns):.1f} ± {np.std(returns):.1f} over {len(returns)} {acting(args)} "
          f"episodes of {args.env_id} (checkpoint at step {checkpoint['global_step']:,})", flush=True)
    return returns


if __name__ == "__main__":
    cli_args = tyro.cli(Args, default=defaults_from_checkpoint(sys.argv[1:]), description=__doc__.split("\n\n")[0])
    try:
        if cli_args.eval_checkpoint:
            evaluate_checkpoint(cli_args)
        else:
            summary = train(cli_args)
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # the run is over: a late Ctrl-C has nothing to stop
            # 143 (128 + 15) after SIGTERM, as a process it killed reports, 130 (128 + 2) after Ctrl-C
            sys.exit(143 if summary["signal"] == "SIGTERM" else 130 if summary["signal"]
                     else 1 if summary["failed"] else 0)
    except UsageError as error:
        print(f"{ALGORITHM}.py: error: {error}", file=sys.stderr)
        sys.exit(2)
    except SaveError as error:
        print(f"{ALGORITHM}.py: error: {error}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("aborted without saving", file=sys.stderr)
        sys.exit(130)
