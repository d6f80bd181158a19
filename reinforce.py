"""REINFORCE: the Monte-Carlo policy gradient, with reward-to-go.

The idea of this file, the first rung of the ladder: improve a stochastic policy π_θ(a|s) by
gradient ascent on its expected return, with a gradient estimated from sampled episodes alone.

Why stochastic. A random policy explores by itself, and it can be the best there is: in Sutton and
Barto's short corridor (ShortCorridor in tests/user_envs.py) all states look alike and one swaps
left and right, so any fixed action loops until the time limit, while going right with probability
0.59 arrives in 11.7 steps on average (--no-eval-greedy evaluates so). Finite differences instead
would need noisy episodes at θ + h e_i for every parameter; ĝ takes all from the same episodes.

The objective is the expected return of a trajectory τ = (s_0, a_0, r_0, s_1, a_1, r_1, ...),
J(θ) = E_{τ ~ π_θ}[ R(τ) ] with R(τ) = Σ_t γ^t r_t. Log-derivative trick: ∇p = p ∇log p, so the
gradient of the expectation is the expectation of something we can sample:

    ∇J(θ) = Σ_τ ∇p(τ|θ) R(τ) = Σ_τ p(τ|θ) ∇log p(τ|θ) R(τ) = E_τ[ ∇log p(τ|θ) R(τ) ]

The dynamics drop out. p(τ|θ) = ρ_0(s_0) Π_t π_θ(a_t|s_t) P(s_{t+1}|s_t, a_t), and only the π_θ
factors depend on θ, so ∇log p(τ|θ) = Σ_t ∇log π_θ(a_t|s_t) and, with no model of the env,

    ∇J(θ) = E_τ[ Σ_t ∇log π_θ(a_t|s_t) R(τ) ]                              whole-return weights

Reward-to-go: an action cannot change the rewards that came before it. Given the history
h_t = (s_0, a_0, r_0, ..., s_t), each r_k with k < t is fixed, and the score of a_t ~ π_θ(·|s_t)
has mean Σ_a π_θ(a|s_t) ∇log π_θ(a|s_t) = ∇Σ_a π_θ(a|s_t) = ∇1 = 0, so E[∇log π_θ(a_t|s_t) r_k] =
E[ r_k E[∇log π_θ(a_t|s_t) | h_t] ] = 0. Dropping those terms keeps the mean, not their noise:

    ∇J(θ) = E_τ[ Σ_t γ^t ∇log π_θ(a_t|s_t) G_t ],   G_t = Σ_{k≥t} γ^{k-t} r_k    reward-to-go

From a batch D of complete episodes, the estimate is the sample mean, and it is the gradient of a
pseudo-loss that autograd can differentiate (w_t is G_t, or R(τ) with --no-reward-to-go):

    ĝ    =  1/|D| Σ_{τ∈D} Σ_t ∇log π_θ(a_t|s_t) w_t
    L(θ) = -1/|D| Σ_{τ∈D} Σ_t  log π_θ(a_t|s_t) w_t,        ∇L(θ) = -ĝ

L is not a loss in the usual sense: its value says nothing about how well the policy does, and its
gradient is ĝ only at the θ that sampled the batch. So each batch gets one step, then new episodes.

Three honest approximations, as in most implementations:
  - Reward-to-go weights drop the factor γ^t of the exact gradient (γ then acts as a horizon that
    trades bias for variance): with γ < 1 they are biased, where R(τ) (--no-reward-to-go) is not.
  - --norm-weights shifts the batch's weights to zero mean (a constant baseline) and scales them to
    unit std (a step size that adapts to the return scale): less variance, a little bias.
  - An episode cut by a time limit is treated as if it ended there, so the rewards the limit cut
    off are missing from its G_t. reinforce_baseline.py bootstraps that tail from V_φ(s_T).

Reading map: rewards_to_go (G_t), compute_weights (w_t), policy_loss (L), Policy (π_θ),
reinforce_update (one step on L), collect_batch and make_batch (the batch D), then train(): read
down to the PLUMBING banner. The tests show the math: tests/test_reinforce.py (on a two-step MDP
solved exactly, the mean of ĝ over many batches is ∇J, and reward-to-go lowers its variance).
make_env turns Discrete (one-hot), Tuple and Dict observations into one vector, as Box ones are.

References:
    Williams (1992). Simple Statistical Gradient-Following Algorithms for Connectionist
        Reinforcement Learning. Machine Learning 8, 229-256.
    Sutton, McAllester, Singh, Mansour (2000). Policy Gradient Methods for Reinforcement
        Learning with Function Approximation. NeurIPS 12.

Example:
    python reinforce.py --env-id CartPole-v1 --seed 1
    python reinforce.py --eval-checkpoint runs/<run>/reinforce.pt
"""

import collections
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
import torch.nn as nn
import gymnasium as gym
import tyro
from gymnasium.wrappers.utils import RunningMeanStd
from torch.utils.tensorboard import SummaryWriter

ALGORITHM = "reinforce"  # names this script in its messages, checkpoints and summary.json


@dataclass
class Hyperparameters:
    """What the algorithm does; Args, below the PLUMBING banner, adds the run's own flags."""
    env_id: str = "CartPole-v1"
    """gymnasium env id; for your own env `module:EnvName-v0` or `module:ClassName` (README.md)"""
    total_timesteps: int = 200_000
    """env steps to train for, over all envs (the last batch may run past it)"""
    learning_rate: float = 3e-3
    """Adam step size of the policy"""
    num_envs: int = 1
    """parallel envs in the vector env"""
    batch_steps: int = 1000
    """steps per batch: envs run until the batch holds this many, then finish their episodes"""
    gamma: float = 0.99
    """discount factor γ"""
    reward_to_go: bool = True
    """weigh log π_θ(a_t|s_t) by the reward-to-go G_t; with --no-reward-to-go by the return R(τ)"""
    norm_weights: bool = True
    """shift and scale each batch's weights to zero mean and unit std"""
    norm_obs: bool = False
    """normalise observations by their running mean and std, then clip them to ±10 (for MuJoCo)"""


# ------------------------------------------------------------------------------------- the math
def rewards_to_go(rewards: np.ndarray, gamma: float, last_value: float = 0.0) -> np.ndarray:
    """G_t = r_t + γ G_{t+1} for one episode, from G_T = last_value after its last reward.
    G_T = 0 after a termination; after a time limit 0 in reinforce.py, V_φ(s_T) in the next file."""
    returns, future = np.zeros(len(rewards), dtype=np.float64), last_value
    for t in reversed(range(len(rewards))):
        future = rewards[t] + gamma * future  # G_t = r_t + γ G_{t+1}
        returns[t] = future
    return returns


def compute_weights(episodes: list[dict], gamma: float, reward_to_go: bool,
                    normalise: bool) -> np.ndarray:
    """w_t for every step of the batch, episode after episode: the reward-to-go G_t, or the whole
    return R(τ) = G_0 at every step of τ; with normalise, shifted and scaled to mean 0, std 1."""
    returns = [rewards_to_go(episode["rewards"], gamma) for episode in episodes]
    weights = np.concatenate([G if reward_to_go else np.full(len(G), G[0]) for G in returns])
    if normalise:
        weights = (weights - weights.mean()) / (weights.std() + 1e-8)
    return weights


def policy_loss(logprobs: torch.Tensor, weights: torch.Tensor, num_episodes: int) -> torch.Tensor:
    """The pseudo-loss L(θ) = -1/|D| Σ_τ Σ_t log π_θ(a_t|s_t) w_t: its gradient is -ĝ."""
    return -(logprobs * weights).sum() / num_episodes


# ------------------------------------------------------------------------------------ the agent
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


class Policy(nn.Module):
    """π_θ(a|s), a 64-64 tanh MLP: Categorical over its logits z for a Discrete action space, or a
    diagonal Gaussian with mean μ_θ(s) and a state-independent learned log σ for a Box one:

        log π_θ(a|s) = z_a - log Σ_b exp z_b,   z = logits_θ(s)
        log π_θ(a|s) = Σ_i [ -(a_i - μ_θ(s)_i)² / (2σ_i²) - log σ_i - ½ log 2π ]
    """

    def __init__(self, obs_dim: int, action_space: gym.Space):
        super().__init__()
        self.discrete = isinstance(action_space, gym.spaces.Discrete)
        action_size = int(action_space.n) if self.discrete else action_space.shape[0]
        # A small last layer starts the policy near uniform (or the mean near 0, with σ = 1).
        self.actor = mlp(obs_dim, action_size, out_std=0.01)
        if not self.discrete:
            self.log_std = nn.Parameter(torch.zeros(action_size))

    def logprob_entropy(self, obs: torch.Tensor, actions: torch.Tensor):
        """log π_θ(a|s) of the given actions and the entropy H(π_θ(·|s)), per state."""
        if not self.discrete:  # Σ_i log N(a_i; μ_θ(s)_i, σ_i²), and the Gaussian's entropy
            u = (actions - self.actor(obs)) / self.log_std.exp()
            logprob = (-0.5 * u ** 2 - self.log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
            entropy = (0.5 + 0.5 * math.log(2 * math.pi) + self.log_std).sum(-1)
            return logprob, entropy.expand(obs.shape[:-1])
        log_probs = torch.log_softmax(self.actor(obs), dim=-1)  # z_a - log Σ_b exp z_b
        logprob = log_probs.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)
        entropy = -(log_probs.exp() * log_probs).sum(-1)
        return logprob, entropy

    def sample_action(self, obs: torch.Tensor) -> torch.Tensor:
        """a ~ π_θ(·|s): a Categorical draw, or μ_θ(s) + σ ⊙ ξ, ξ ~ N(0, I) (before clipping)."""
        out = self.actor(obs)
        if not self.discrete:
            return out + self.log_std.exp() * torch.randn_like(out)
        # Gumbel-max: argmax_a (z_a - log e_a), e_a ~ Exp(1), is a ~ softmax(z)
        return (out - torch.empty_like(out).exponential_().log()).argmax(-1)

    def greedy_action(self, obs: torch.Tensor) -> torch.Tensor:
        """The most probable action: argmax of the logits, or the Gaussian's mean."""
        out = self.actor(obs)
        return out.argmax(-1) if self.discrete else out


# ----------------------------------------------------------------------------------- the update
def reinforce_update(policy: Policy, optimizer: torch.optim.Optimizer, batch: dict) -> dict:
    """One gradient step on L(θ); the diagnostics."""
    logprobs, entropy = policy.logprob_entropy(batch["obs"], batch["actions"])
    loss = policy_loss(logprobs, batch["weights"], batch["num_episodes"])
    if not torch.isfinite(loss):
        raise FloatingPointError(f"policy loss is {loss.item()}")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    with torch.no_grad():  # a diagnostic, how far the step moved π: k3 estimate of KL(old ‖ new)
        log_ratio = policy.logprob_entropy(batch["obs"], batch["actions"])[0] - logprobs.detach()
        approx_kl = ((log_ratio.exp() - 1) - log_ratio).mean()
    return {"policy_loss": loss.item(), "entropy": entropy.mean().item(),
            "approx_kl": approx_kl.item()}


# ---------------------------------------------------------------------------------- the rollout
def make_env(env_id: str, obs_rms: Optional[RunningMeanStd] = None, update_stats: bool = True,
             video_dir: Optional[str] = None):
    """A thunk building one env (filming to video_dir, if given) that flattens its observations
    into one vector and normalises them by obs_rms, if given (shared by all envs, carried by the
    checkpoint, frozen if not update_stats): s ← clip((s - mean[s]) / √(var[s] + 1e-8), -10, 10)."""
    def thunk():
        env = gym.make(env_id, render_mode="rgb_array") if video_dir else gym.make(env_id)
        if env.spec.max_episode_steps is None:  # REINFORCE waits for every episode's end
            env = gym.wrappers.TimeLimit(env, max_episode_steps=10_000)
        if video_dir:
            env = gym.wrappers.RecordVideo(env, video_dir, disable_logger=True)
        if not isinstance(env.observation_space, gym.spaces.Box):  # Discrete, Tuple, Dict...: one
            env = gym.wrappers.FlattenObservation(env)             # vector, one-hot per Discrete
        if obs_rms is not None:
            env = NormalizeObservation(env)  # gymnasium's, faster (PLUMBING)
            env.obs_rms, env.update_running_mean = obs_rms, update_stats
            env = gym.wrappers.TransformObservation(env, lambda obs: np.clip(obs, -10, 10),
                                                    env.observation_space)
        return env
    return thunk


def make_vec_env(env_id: str, num_envs: int, obs_rms, video_dir: Optional[str] = None):
    """num_envs copies, autoreset in the same step (final_obs at hand); the first one films."""
    thunks = [make_env(env_id, obs_rms, video_dir=video_dir if i == 0 else None)
              for i in range(num_envs)]
    return gym.vector.SyncVectorEnv(thunks, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)


def collect_batch(envs: gym.vector.VectorEnv, policy: Policy, batch_steps: int,
                  device: torch.device, episode_ended) -> list[dict]:
    """Run π_θ in every env until the batch holds batch_steps steps of complete episodes: each env
    finishes the episode it is in; later ones are dropped. Returns the episodes (steps' arrays,
    how each ended); episode_ended(env steps into the batch, env, return, length) hears of each."""
    N, space = envs.num_envs, envs.single_action_space
    box = isinstance(space, gym.spaces.Box)
    obs, _ = envs.reset()  # each batch starts new episodes: none runs on from an older policy
    running = [[] for _ in range(N)]  # (s_t, a_t, r_t) of each env's episode so far
    collecting = np.ones(N, dtype=bool)
    episodes, batch_size, env_steps = [], 0, 0
    while collecting.any():
        with torch.inference_mode():
            action = policy.sample_action(torch.as_tensor(obs, dtype=torch.float32, device=device))
        action = action.cpu().numpy()
        # The env gets the action clipped to its bounds, or shifted to a Discrete space's start.
        env_action = np.clip(action, space.low, space.high) if box else action + int(space.start)
        next_obs, reward, terminated, truncated, info = envs.step(env_action)
        env_steps += N
        for i in np.flatnonzero(collecting):
            running[i].append((obs[i], action[i], reward[i]))
            if terminated[i] or truncated[i]:
                states, actions, rewards = zip(*running[i])
                rewards, running[i] = np.array(rewards, dtype=np.float64), []
                episodes.append({"obs": np.array(states, dtype=np.float32), "rewards": rewards,
                                 "actions": np.array(actions), "terminated": bool(terminated[i]),
                                 "end_step": env_steps})
                episode_ended(env_steps, int(i), float(rewards.sum()), len(rewards))
                batch_size += len(rewards)
                collecting[i] = batch_size < batch_steps
        obs = next_obs
    return episodes


def make_batch(episodes: list[dict], args: Hyperparameters, device: torch.device) -> dict:
    """The batch D as tensors of its steps, episode after episode, and their weights w_t."""
    obs = torch.from_numpy(np.concatenate([e["obs"] for e in episodes])).to(device)
    actions = torch.from_numpy(np.concatenate([e["actions"] for e in episodes])).to(device)
    weights = compute_weights(episodes, args.gamma, args.reward_to_go, args.norm_weights)
    return {"obs": obs, "actions": actions, "num_episodes": len(episodes),
            "weights": torch.from_numpy(weights).float().to(device)}


# --------------------------------------------------------------------------------------- train
def train(args: "Args") -> dict:
    """Train REINFORCE as args say; return the run's summary. Run, below the PLUMBING banner, does
    the rest: checks, seeding, resuming, logging, Ctrl-C, the checkpoint, evaluation."""
    run = Run(args)
    obs_rms = run.normalisation()  # running statistics of observations, shared by all envs, or None
    envs = make_vec_env(run.env_id, args.num_envs, obs_rms, run.video_dir)
    policy = Policy(run.obs_dim, envs.single_action_space).to(run.device)
    optimizer = torch.optim.Adam(policy.parameters(), lr=args.learning_rate)
    run.start(envs, policy=policy, optimizer=optimizer)  # resumes from a checkpoint; seeds the envs
    try:
        for _ in run.iterations():
            episodes = collect_batch(envs, policy, args.batch_steps, run.device, run.episode_ended)
            batch = make_batch(episodes, args, run.device)
            losses = reinforce_update(policy, optimizer, batch)
            run.log(losses, optimizer, batch)
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
    """record videos of the first env's episodes into the run's videos/ (needs moviepy)"""
    save_model: bool = True
    """save a checkpoint at the end of training, on Ctrl-C or SIGTERM, and every --checkpoint-every"""
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
    """evaluate with the greedy action (the mean, for a Gaussian); --no-eval-greedy samples actions
    from the policy, for envs whose best policy is random"""


class Run:
    """All of a training run that is not the algorithm: the checks, seeding, resuming, the run
    directory, tensorboard (and wandb), the progress line, Ctrl-C, the checkpoint, evaluation
    and summary.json. train() calls it at a few points; each method says when."""

    def __init__(self, args: Args):
        """Before anything is built: check the flags and the env, load a checkpoint to resume,
        seed, make the run directory and its writer."""
        validate_args(args, FLAG_RULES)
        self.args = args
        self.env_id, self.obs_dim, self.action_space, self.threshold = check_env(args.env_id, args.capture_video)
        torch.set_num_threads(args.torch_threads)
        self.device = torch.device("cuda" if args.cuda and torch.cuda.is_available() else "cpu")
        self.checkpoint = None
        if args.resume:
            self.checkpoint = load_checkpoint(args.resume, self.obs_dim, self.action_space, self.device)
            check_resume(self.checkpoint, args, ("norm_obs",))
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
        self.episodes = []  # the episodes that ended in the current rollout
        self.logged_step = -math.inf  # the step at which the losses were last logged
        self.interrupted = self.failed = False
        self.stopped_by = None  # the signal that stopped the run, if one did

    def normalisation(self) -> Optional[RunningMeanStd]:
        """The running statistics of the observations: the checkpoint's, or new ones."""
        if self.checkpoint:
            self.obs_rms = self.checkpoint["obs_rms"]
        else:
            self.obs_rms = RunningMeanStd(shape=(self.obs_dim,)) if self.args.norm_obs else None
        return self.obs_rms

    def start(self, envs: gym.vector.VectorEnv, **modules) -> None:
        """Once the envs, the networks and their optimisers exist (modules, by the names the checkpoint
        keeps them under): restore the modules from the checkpoint, with the learning rates the flags
        give, not the saved ones; seed the envs (each batch resets them again, going on from there)."""
        self.envs, self.modules = envs, modules
        if self.checkpoint:
            for name, module in modules.items():
                module.load_state_dict(self.checkpoint[name])
            modules["optimizer"].param_groups[0]["lr"] = self.args.learning_rate
        envs.reset(seed=self.args.seed + self.global_step)  # env i gets this seed + i

    def iterations(self):
        """The updates still to run, until --total-timesteps; after a Ctrl-C the loop ends with the update in
        progress. A progress line every few seconds."""
        self.start_time = self.last_print = self.last_save = time.perf_counter()
        self.start_step = self.global_step
        with StopOnSignal() as self.signals:
            print(f"{ALGORITHM} on {self.args.env_id}: batches of {self.args.batch_steps}+ steps on {self.device}; "
                  f"logging to {self.run_dir}", flush=True)
            while self.global_step < self.args.total_timesteps:
                yield
                if self.stop and self.global_step < self.args.total_timesteps:
                    self.interrupted, self.stopped_by = True, self.signals.requested
                    return

    def episode_ended(self, steps: int, env: int, episodic_return: float, length: int) -> None:
        """Called by the rollout for each episode that ends, `steps` env steps into it."""
        self.episodes.append((steps, env, time.perf_counter(), episodic_return, length))

    def _end_rollout(self) -> None:
        """Count the rollout's steps; log its episodes, in order, and note when the mean return
        of the last 20 first reached the env's threshold."""
        self.stop = self.signals.requested
        ended, self.episodes = sorted(self.episodes), []
        for steps, same_step in itertools.groupby(ended, key=lambda episode: episode[0]):
            for _, _, ended_at, episodic_return, length in same_step:
                self.recent_returns.append(episodic_return)
                self.writer.add_scalar("charts/episodic_return", episodic_return, self.global_step + steps)
                self.writer.add_scalar("charts/episodic_length", length, self.global_step + steps)
            if (self.stats["steps_to_threshold"] is None and self.threshold is not None
                    and len(self.recent_returns) == self.recent_returns.maxlen
                    and np.mean(self.recent_returns) >= self.threshold):
                self.stats["steps_to_threshold"] = self.global_step + steps
                self.stats["seconds_to_threshold"] = self.previous_seconds + ended_at - self.start_time
        self.global_step += ended[-1][0]  # a batch ends with the step that ends its last episode

    def log(self, losses: dict, optimizer: torch.optim.Optimizer, batch: dict) -> None:
        """After each update: its rollout's episodes; every 500 steps or so, the losses, the
        learning rate, steps/s."""
        self._end_rollout()
        now, total = time.perf_counter(), self.args.total_timesteps
        sps = (self.global_step - self.start_step) / (now - self.start_time)
        # tensorboard takes some 40 µs a scalar: updates of 40 steps (a2c.py's) would spend a tenth of
        # the run on them, so the losses are logged once in 500 steps or more, and at the end.
        if self.global_step - self.logged_step >= 500 or self.global_step >= total or self.stop:
            self.logged_step = self.global_step
            self.writer.add_scalar("charts/learning_rate", optimizer.param_groups[0]["lr"], self.global_step)
            self.writer.add_scalar("charts/SPS", sps, self.global_step)
            self.writer.add_scalar("charts/batch_episodes", batch["num_episodes"], self.global_step)
            for key, value in losses.items():
                self.writer.add_scalar(f"losses/{key}", value, self.global_step)
        if now - self.last_print >= 5.0 or self.global_step >= total or self.stop:
            self.last_print = now
            print_progress(self.global_step, total, self.recent_returns, sps)
        if self.args.checkpoint_every and now - self.last_save >= self.args.checkpoint_every:
            write_summary(self, [], self.save(), in_progress=True)  # what a run killed now goes on from

    def fail(self, error: FloatingPointError) -> None:
        """A non-finite loss or gradient: stop. The weights on disk are the last good ones."""
        self._end_rollout()
        print(f"{ALGORITHM}.py: error: training stopped at step {self.global_step}: {error}", file=sys.stderr)
        self.failed = True

    def save(self) -> Optional[str]:
        """The checkpoint as the run stands: at the end, on Ctrl-C or SIGTERM, and every
        --checkpoint-every seconds. Never over a good one with weights or statistics that are not
        finite. Its path, or None if not saved."""
        self.last_save = time.perf_counter()
        self.stats.update(recent_returns=list(self.recent_returns),
                          wall_seconds=self.previous_seconds + self.last_save - self.start_time)
        networks = [module for module in self.modules.values() if isinstance(module, nn.Module)]
        finite = (all(torch.isfinite(p).all() for network in networks for p in network.parameters())
                  and (self.obs_rms is None or np.isfinite(self.obs_rms.var).all()))
        if not (self.args.save_model and finite):
            return None
        path = os.path.join(self.run_dir, f"{self.args.exp_name}.pt")
        save_checkpoint(path, {
            "algorithm": ALGORITHM, "obs_dim": self.obs_dim, "action_space": describe(self.action_space),
            **{name: module.state_dict() for name, module in self.modules.items()},
            "obs_rms": self.obs_rms, "global_step": self.global_step,
            "stats": self.stats, "args": asdict(self.args)})
        return path

    def finish(self) -> dict:
        """After the last update: save the checkpoint, evaluate, write summary.json; return it."""
        self.envs.close()
        checkpoint = self.save()
        eval_returns = []
        if not (self.interrupted or self.failed):
            try:
                eval_returns = evaluate(self.modules["policy"], self.env_id, self.obs_rms, self.args.eval_episodes,
                                        self.args.seed + 10_000, self.device, self.args.eval_greedy)
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
    "total_timesteps": "count", "num_envs": "count", "batch_steps": "count", "eval_episodes": "count",
    "torch_threads": "count", "gamma": "fraction", "learning_rate": "positive",
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
    if not (isinstance(action_space, gym.spaces.Discrete)
            or isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1):
        raise UsageError(f"{name} has action space {action_space}; {ALGORITHM}.py needs a Discrete one "
                         "or a flat Box (vector) one")
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


# ------------------------------------------------------------------------ normalising wrappers
def update_with_one(rms: RunningMeanStd, x: np.ndarray) -> None:
    """rms.update(np.array([x])), as gymnasium's wrappers call it at every env step, written for a
    batch of one sample, whose mean is x and variance 0: with the float64 statistics the scripts
    keep, bitwise the same numbers (tests/test_fast_paths.py), without the batch form's np.mean
    and np.var (3 to 15 times faster; README.md, "The physical limit")."""
    delta, count = x - rms.mean, rms.count + 1
    rms.mean, rms.var, rms.count = (rms.mean + delta / count,
                                    (rms.var * rms.count + np.square(delta) * rms.count / count) / count, count)


class NormalizeObservation(gym.wrappers.NormalizeObservation):
    """gymnasium's wrapper, its running statistics updated by update_with_one."""

    def observation(self, observation):
        if self.update_running_mean:
            update_with_one(self.obs_rms, observation)
        return np.float32((observation - self.obs_rms.mean) / np.sqrt(self.obs_rms.var + self.epsilon))


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
GREEDY = "greedy (mean-action)"  # how evaluation acts, in messages: argmax, or the Gaussian's mean


def acting(args: Args) -> str:
    """How evaluation acts, in messages."""
    return GREEDY if args.eval_greedy else "sampled"


def evaluate(policy: Policy, env_id: str, obs_rms: Optional[RunningMeanStd], episodes: int, seed: int,
             device: torch.device, greedy: bool = True, video_dir: Optional[str] = None) -> list[float]:
    """Raw returns of `episodes` episodes with the greedy action (the mean, for a Gaussian), or
    with actions sampled from the policy if not greedy; observations normalised by the frozen obs_rms."""
    env = make_env(env_id, obs_rms, update_stats=False, video_dir=video_dir)()
    torch.manual_seed(seed)  # sampled actions are the same each time
    space = env.action_space
    returns = []
    obs, _ = env.reset(seed=seed)
    for _ in range(episodes):
        done, episodic_return = False, 0.0
        while not done:
            with torch.inference_mode():
                obs_tensor = torch.as_tensor(np.asarray(obs, dtype=np.float32), device=device)
                action = (policy.greedy_action if greedy else policy.sample_action)(obs_tensor).cpu().numpy()
            action = (np.clip(action, space.low, space.high) if isinstance(space, gym.spaces.Box)
                      else int(action) + int(space.start))
            obs, reward, terminated, truncated, _ = env.step(action)
            episodic_return += float(reward)
            done = terminated or truncated
        returns.append(episodic_return)
        obs, _ = env.reset()
    env.close()
    return returns


def evaluate_checkpoint(args: Args) -> list[float]:
    """--eval-checkpoint: load the policy and normalisation saved at that path and run episodes."""
    validate_args(args, FLAG_RULES)
    env_id, obs_dim, action_space, _ = check_env(args.env_id, args.capture_video)
    torch.set_num_threads(args.torch_threads)
    device = torch.device("cuda" if args.cuda and torch.cuda.is_available() else "cpu")
    checkpoint = load_checkpoint(args.eval_checkpoint, obs_dim, action_space, device)
    policy = Policy(obs_dim, action_space).to(device)
    policy.load_state_dict(checkpoint["policy"])
    video_dir = (os.path.join(os.path.dirname(os.path.abspath(checkpoint_file(args.eval_checkpoint))), "videos", "eval")
                 if args.capture_video else None)
    returns = evaluate(policy, env_id, checkpoint["obs_rms"], args.eval_episodes, args.seed + 10_000, device,
                       args.eval_greedy, video_dir)
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
