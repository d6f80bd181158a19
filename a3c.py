"""Asynchronous advantage actor-critic (A3C): a2c.py's update, by workers that never wait.

The idea this file adds to a2c.py: asynchrony. A3C (Mnih et al. 2016) runs K workers, each a
process with its own envs and its own copy θ', φ' of the networks, around one shared θ, φ:

    repeat:  θ', φ' ← θ, φ                         pull
             roll π_θ' out; g ← ∇L(θ', φ')          a2c.py's GAE(λ) advantages Â_t and loss L
             θ, φ ← θ, φ - α · RMSprop(g)           push

One gradient step per rollout of N envs x T steps, on

    L(θ, φ) = -Ê_t[ log π_θ(a_t|s_t) Â_t ]          policy gradient, Â_t held constant
              + c_v · ½ Ê_t[ (V_φ(s_t) - R̂_t)² ]      critic regression on R̂_t = Â_t + V_φ(s_t)
              - c_e · Ê_t[ H(π_θ(·|s_t)) ]             entropy bonus

The entropy bonus pays the policy for staying random, so it keeps exploring instead of collapsing
onto one action on a few noisy advantages. (On a Gaussian with a state-independent log σ it pulls
every log σ_i up alike; on MuJoCo σ kept growing, so README.md's settings there use none.)

No worker waits for another, so a push lands on a θ that k other pushes have moved since the pull
it was computed at: k is its staleness, about K - 1. θ, φ, RMSprop's statistics (the paper's shared
RMSprop) and those of --norm-obs and --norm-reward live in shared memory, written with no lock, as
in Hogwild! (Recht et al. 2011): two pushes at once interleave, and each element still gets both.

It converges: with ∇L L_g-Lipschitz, a gradient k steps old is off by at most L_g k α max‖g‖, a
bias that vanishes with the step size α; SGD with a bounded delay reaches a stationary point as SGD
does, more slowly as k grows (Lian et al. 2015). It buys K cores stepping K envs and computing K
gradients at once, and costs stale gradients and runs one seed does not repeat (the OS orders the
pushes; with --num-workers 1, a3c.py makes a2c.py's updates exactly). A2C replaced it on GPUs,
where one batched step does the K workers' work, fresh, and learns as well (Wu et al. 2017).

The policy is Categorical for a Discrete action space and a diagonal Gaussian with a
state-independent log σ for a Box one; the sample is stored, only the env's copy is clipped to the
bounds. The optimiser is RMSprop (α 0.99, as in the paper) or Adam; --value-loss huber caps the
gradient of a large critic error. --norm-obs and --norm-reward (for MuJoCo) normalise with running
statistics shared by all envs (make_env). The defaults were tuned on CartPole-v1.

Reading map: compute_gae (δ_t, GAE), policy_loss and value_loss (L), Agent (π_θ, V_φ), a2c_update
(one step on L), collect_rollout and make_batch (s_{t+1}, Â_t, R̂_t), then train(): read down to
the PLUMBING banner; share and Push (θ, φ shared; the push) and worker (pull, roll out, push) come
before train(). tests/test_a3c.py: one worker makes a2c.py's updates; several share, and go stale.
make_env turns Discrete (one-hot), Tuple and Dict observations into one vector, as Box ones are.

References:
    Mnih et al. (2016). Asynchronous Methods for Deep Reinforcement Learning. arXiv:1602.01783
    Recht, Re, Wright, Niu (2011). Hogwild! (lock-free parallel SGD). arXiv:1106.5730
    Lian, Huang, Li, Liu (2015). Asynchronous parallel SGD for nonconvex problems. arXiv:1506.08272
    Wu, Mansimov, Liao, Grosse, Ba (2017). Scalable trust-region method for deep reinforcement
        learning using Kronecker-factored approximation (A2C as a baseline). arXiv:1708.05144
    Schulman, Moritz, Levine, Jordan, Abbeel (2016). High-Dimensional Continuous Control Using
        Generalized Advantage Estimation. arXiv:1506.02438

Example:
    python a3c.py --env-id CartPole-v1 --seed 1 --num-workers 2
    python a3c.py --eval-checkpoint runs/<run>/a3c.pt
"""

import collections
import importlib
import itertools
import json
import math
import os
import queue
import random
import signal
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from typing import Literal, Optional

import numpy as np
import torch
import torch.nn as nn
import torch.multiprocessing as mp
import torch.nn.functional as F
import gymnasium as gym
import tyro
from gymnasium.wrappers.utils import RunningMeanStd
from torch.utils.tensorboard import SummaryWriter

ALGORITHM = "a3c"  # names this script in its messages, checkpoints and summary.json


@dataclass
class Hyperparameters:
    """What the algorithm does; Args, below the PLUMBING banner, adds the run's own flags."""
    env_id: str = "CartPole-v1"
    """gymnasium env id; for your own env `module:EnvName-v0` or `module:ClassName` (README.md)"""
    total_timesteps: int = 100_000
    """env steps to train for, over all envs (rounded up to a whole number of rollouts)"""
    learning_rate: float = 3e-3
    """step size of the optimiser"""
    optimizer: Literal["rmsprop", "adam"] = "rmsprop"
    """RMSprop (α 0.99, eps 1e-5) or Adam (eps 1e-5)"""
    anneal_lr: bool = False
    """decay the learning rate linearly over the run, to lr / (number of updates) at the last"""
    num_workers: int = os.cpu_count() or 1
    """workers, each a process with its own envs and copy of the networks (default: the cores)"""
    num_envs: int = 8
    """parallel envs in the vector env"""
    num_steps: int = 5
    """steps per env in each rollout; a rollout is num_envs * num_steps"""
    gamma: float = 0.98
    """discount factor γ"""
    gae_lambda: float = 1.0
    """GAE λ: 0 gives one-step TD errors, 1 the n-step return to the rollout's end, minus V"""
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
    """scale rewards by the running std of the discounted return, clip them to ±10 (for MuJoCo)"""


# ------------------------------------------------------------------------------------- the math
def compute_gae(rewards, values, next_values, terminations, truncations, gamma: float, lam: float):
    """GAE Â_t over a rollout of shape (T,) or (T, N). next_values[t] is V_φ(s_{t+1}) of the true
    successor: a termination zeroes it, a truncation keeps it (the return the time limit cut off
    is bootstrapped). Either one stops the recursion at the episode's end."""
    not_done = 1.0 - torch.maximum(terminations.float(), truncations.float())
    # δ_t; a terminated successor has no value: where, not (1 - term) ·, since 0 · NaN is NaN
    deltas = rewards + gamma * torch.where(terminations.bool(), 0.0, next_values) - values
    advantages = torch.zeros_like(deltas)
    next_advantage = torch.zeros_like(deltas[0])
    for t in reversed(range(len(deltas))):  # Â_t = δ_t + γλ(1 - done_t) Â_{t+1}
        next_advantage = deltas[t] + gamma * lam * not_done[t] * next_advantage
        advantages[t] = next_advantage
    return advantages


def policy_loss(logprobs: torch.Tensor, advantages: torch.Tensor) -> torch.Tensor:
    """-Ê_t[log π_θ(a_t|s_t) Â_t]: its gradient is minus the policy gradient estimate."""
    return -(logprobs * advantages).mean()


def value_loss(values: torch.Tensor, returns: torch.Tensor, kind: str) -> torch.Tensor:
    """½ Ê[(V_φ(s) - R̂)²], or the Huber loss: the same for errors within ±1, linear beyond."""
    if kind == "huber":
        return F.huber_loss(values, returns, delta=1.0)
    return 0.5 * ((values - returns) ** 2).mean()


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


class Agent(nn.Module):
    """The actor π_θ(a|s) and the critic V_φ(s), separate 64-64 tanh MLPs. The actor is
    Categorical over its logits z for a Discrete action space, or a diagonal Gaussian with mean
    μ_θ(s) and a state-independent learned log σ for a Box one:

        log π_θ(a|s) = z_a - log Σ_b exp z_b,   z = logits_θ(s)
        log π_θ(a|s) = Σ_i [ -(a_i - μ_θ(s)_i)² / (2σ_i²) - log σ_i - ½ log 2π ]
    """

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
def make_optimizer(agent: Agent, args: Hyperparameters) -> torch.optim.Optimizer:
    """RMSprop or Adam, eps 1e-5 as OpenAI Baselines had it (torch adds it outside the root).
    foreach: each operation over all the tensors at once; on the CPU the same numbers, sooner."""
    if args.optimizer == "adam":
        return torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5,
                                foreach=True)
    return torch.optim.RMSprop(agent.parameters(), lr=args.learning_rate, alpha=0.99, eps=1e-5,
                               foreach=True)


def share(agent: Agent, optimizer: torch.optim.Optimizer) -> None:
    """Move θ, φ and the optimiser's statistics into shared memory, the statistics made now (zeros,
    as the first step would make them) so that every worker steps the same: shared RMSprop."""
    agent.share_memory()
    adam = isinstance(optimizer, torch.optim.Adam)
    for p in agent.parameters():
        for key in ("step", "exp_avg", "exp_avg_sq") if adam else ("step", "square_avg"):
            state = optimizer.state[p]  # a resumed run's come from the checkpoint
            state.setdefault(key, torch.zeros(()) if key == "step" else torch.zeros_like(p))
            state[key].share_memory_()


class Push:
    """The optimiser a worker gives a2c_update: step() pushes g, the gradient on the worker's copy
    θ', φ', into the shared θ, φ, steps the shared optimiser, and pulls the result into the copy."""

    def __init__(self, agent: Agent, shared: Agent, optimizer: torch.optim.Optimizer):
        self.agent, self.shared, self.optimizer = agent, shared, optimizer
        self.param_groups, self.zero_grad = optimizer.param_groups, agent.zero_grad

    def step(self) -> None:
        for p, shared_p in zip(self.agent.parameters(), self.shared.parameters()):
            shared_p.grad = p.grad.to(shared_p.device)  # g, in this process's view of θ, φ
        self.optimizer.step()  # no lock: another worker may be stepping the same tensors
        self.agent.load_state_dict(self.shared.state_dict())


def a2c_update(agent: Agent, optimizer: torch.optim.Optimizer, batch: dict,
               args: Hyperparameters) -> dict:
    """One gradient step on L(θ, φ) over the batch, tensors of shape (T, N, ...); the losses."""
    advantages = batch["advantages"]
    if args.norm_adv:
        advantages = (advantages - advantages.mean()) / (advantages.std(correction=0) + 1e-8)
    values = agent.value(batch["obs"])  # V_φ(s_t), now with the graph the value loss needs
    logprobs, entropy = agent.logprob_entropy(batch["obs"], batch["actions"])
    pg_loss = policy_loss(logprobs, advantages)
    v_loss = value_loss(values, batch["returns"], args.value_loss)
    entropy = entropy.mean()
    loss = pg_loss - args.ent_coef * entropy + args.vf_coef * v_loss
    if not torch.isfinite(loss):
        raise FloatingPointError(f"loss is {loss.item()} (policy {pg_loss.item()}, "
                                 f"value {v_loss.item()})")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
    if not torch.isfinite(grad_norm):  # clipping would spread it into every parameter
        raise FloatingPointError(f"gradient norm is {grad_norm.item()}")
    optimizer.step()
    with torch.no_grad():  # a diagnostic, how far the step moved π: k3 estimate of KL(old ‖ new)
        log_ratio = agent.logprob_entropy(batch["obs"], batch["actions"])[0] - logprobs.detach()
        approx_kl = ((log_ratio.exp() - 1) - log_ratio).mean()
    return {"policy_loss": pg_loss.item(), "value_loss": v_loss.item(), "entropy": entropy.item(),
            "approx_kl": approx_kl.item(), "grad_norm": grad_norm.item()}


# ---------------------------------------------------------------------------------- the rollout
def make_env(env_id: str, obs_rms: Optional[RunningMeanStd] = None, return_rms=None,
             gamma: float = 0.99, update_stats: bool = True, video_dir: Optional[str] = None):
    """A thunk building one env that records its episodes' statistics (and, with a video_dir,
    videos of them), then normalises with the running statistics given (shared by all envs,
    carried by the checkpoint, frozen if not update_stats). Logged returns stay the env's own.

        s ← clip((s - mean[s]) / √(var[s] + 1e-8), -10, 10)              observations
        r ← clip(r / √(var[G] + 1e-8), -10, 10),  G ← γ (1 - term) G + r   rewards
    """
    def thunk():
        env = gym.make(env_id, render_mode="rgb_array") if video_dir else gym.make(env_id)
        if video_dir:
            env = gym.wrappers.RecordVideo(env, video_dir, disable_logger=True)
        if not isinstance(env.observation_space, gym.spaces.Box):  # Discrete, Tuple, Dict...: one
            env = gym.wrappers.FlattenObservation(env)             # vector, one-hot per Discrete
        env = gym.wrappers.RecordEpisodeStatistics(env)
        if obs_rms is not None:
            env = NormalizeObservation(env)  # gymnasium's, faster (PLUMBING)
            env.obs_rms, env.update_running_mean = obs_rms, update_stats
            env = gym.wrappers.TransformObservation(env, lambda obs: np.clip(obs, -10, 10),
                                                    env.observation_space)
        if return_rms is not None:
            env = NormalizeReward(env, gamma=gamma)  # likewise
            env.return_rms, env.update_running_mean = return_rms, update_stats
            env = gym.wrappers.ClipReward(env, -10, 10)
        return env
    return thunk


def make_vec_env(env_id: str, num_envs: int, obs_rms, return_rms, gamma: float,
                 video_dir: Optional[str] = None) -> gym.vector.VectorEnv:
    """num_envs copies, autoreset in the same step (final_obs at hand); the first one films."""
    thunks = [make_env(env_id, obs_rms, return_rms, gamma, video_dir=video_dir if i == 0 else None)
              for i in range(num_envs)]
    return gym.vector.SyncVectorEnv(thunks, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)


def successor_obs(next_obs: np.ndarray, info: dict) -> np.ndarray:
    """The true s_{t+1} of each env. Where an episode just ended, the vector env has already
    reset and returned the next episode's first observation; the final one is in info."""
    if "_final_obs" not in info:
        return next_obs
    successor = next_obs.copy()
    for i in np.flatnonzero(info["_final_obs"]):
        successor[i] = info["final_obs"][i]
    return successor


def collect_rollout(envs: gym.vector.VectorEnv, agent: Agent, obs: np.ndarray, num_steps: int,
                    device: torch.device, episode_ended) -> tuple[dict, np.ndarray]:
    """num_steps steps of every env by π_θ from obs: the rollout, tensors (T, N, ...), and the obs
    to go on from. episode_ended(steps into the rollout, env, return, length) hears of each end."""
    T, N, space = num_steps, envs.num_envs, envs.single_action_space
    box = isinstance(space, gym.spaces.Box)
    rollout = {"obs": np.zeros((T, N, obs.shape[-1]), dtype=np.float32),
               "next_obs": np.zeros((T, N, obs.shape[-1]), dtype=np.float32),  # s_{t+1}
               "actions": (np.zeros((T, N, space.shape[0]), dtype=np.float32) if box  # as sampled
                           else np.zeros((T, N), dtype=np.int64)),
               **{key: np.zeros((T, N), dtype=np.float32) for key in
                  ("rewards", "terminations", "truncations")}}
    for t in range(T):
        rollout["obs"][t] = obs
        with torch.inference_mode():
            action = agent.sample_action(torch.from_numpy(rollout["obs"][t]).to(device))
        action = action.cpu().numpy()
        # The env gets the action clipped to its bounds, or shifted to a Discrete space's start.
        env_action = np.clip(action, space.low, space.high) if box else action + int(space.start)
        obs, reward, terminated, truncated, info = envs.step(env_action)
        rollout["actions"][t], rollout["rewards"][t] = action, reward
        rollout["terminations"][t], rollout["truncations"][t] = terminated, truncated
        rollout["next_obs"][t] = successor_obs(obs, info)
        if "_episode" in info.get("final_info", {}):
            episode = info["final_info"]["episode"]
            for i in np.flatnonzero(info["final_info"]["_episode"]):
                episode_ended((t + 1) * N, int(i), float(episode["r"][i]), int(episode["l"][i]))
    return {key: torch.from_numpy(value).to(device) for key, value in rollout.items()}, obs


def make_batch(agent: Agent, rollout: dict, args: Hyperparameters) -> dict:
    """The rollout with what the update needs besides: V_φ(s_t) from the critic that saw it,
    the advantages Â_t by GAE, and the value targets R̂_t = Â_t + V_φ(s_t)."""
    with torch.no_grad():
        values = agent.value(rollout["obs"])
        next_values = agent.value(rollout["next_obs"])
        advantages = compute_gae(rollout["rewards"], values, next_values, rollout["terminations"],
                                 rollout["truncations"], args.gamma, args.gae_lambda)
    return {"obs": rollout["obs"], "actions": rollout["actions"], "values": values,
            "advantages": advantages, "returns": advantages + values}


# -------------------------------------------------------------------------------------- workers
def worker(index: int, shared: Agent, shared_optimizer: torch.optim.Optimizer, run: "WorkerRun"):
    """Worker `index`, in a process of its own, with its envs and its copy θ', φ' of the networks:
    pull, roll out, push, for each rollout that WorkerRun (below the PLUMBING banner) deals it."""
    args = run.args
    envs = make_vec_env(run.env_id, args.num_envs, run.obs_rms, run.return_rms, args.gamma,
                        run.video_dir)
    agent = Agent(run.obs_dim, envs.single_action_space).to(run.device)
    optimizer = Push(agent, shared, shared_optimizer)  # θ', φ', and how they push into θ, φ
    obs, _ = envs.reset(seed=run.seed)  # env i of worker k gets the run's seed + k · num_envs + i
    try:
        for iteration in run.iterations():
            if args.anneal_lr:  # linearly: lr at the first update, lr / num_iterations at the last
                done = iteration / run.num_iterations
                optimizer.param_groups[0]["lr"] = args.learning_rate * (1 - done)
            agent.load_state_dict(shared.state_dict())  # pull: θ', φ' ← θ, φ
            rollout, obs = collect_rollout(envs, agent, obs, args.num_steps, run.device,
                                           run.episode_ended)
            batch = make_batch(agent, rollout, args)
            losses = a2c_update(agent, optimizer, batch, args)
            run.log(losses, optimizer, batch)
    except FloatingPointError as error:  # a non-finite loss: stop, and keep the last good weights
        run.fail(error)


# --------------------------------------------------------------------------------------- train
def train(args: "Args") -> dict:
    """Train A3C as args say; return the run's summary. Run, below the PLUMBING banner, does
    the rest: checks, seeding, resuming, workers, logging, Ctrl-C, the checkpoint, evaluation."""
    run = Run(args)
    run.normalisation()  # running statistics in shared memory, or None
    agent = Agent(run.obs_dim, run.action_space)  # θ, φ, on the CPU, where all workers reach them
    optimizer = make_optimizer(agent, args)
    run.start(agent, optimizer)  # resumes from a checkpoint
    share(agent, optimizer)
    run.supervise(worker, agent, optimizer)  # --num-workers processes, until they are done
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
        self.device = torch.device("cpu")  # of the shared networks, and of evaluation
        self.checkpoint = None
        if args.resume:
            self.checkpoint = load_checkpoint(args.resume, self.obs_dim, self.action_space, self.device)
            check_resume(self.checkpoint, args, ("norm_obs", "norm_reward", "optimizer"))
        self.global_step = self.checkpoint["global_step"] if self.checkpoint else 0
        self.stats = self.checkpoint["stats"] if self.checkpoint else {
            "recent_returns": [], "steps_to_threshold": None, "seconds_to_threshold": None, "wall_seconds": 0.0}
        self.previous_seconds = self.stats["wall_seconds"]  # of training, before this run went on
        # A resumed run goes on with fresh random numbers, not those its start drew.
        seed_everything(args.seed + self.global_step, args.torch_deterministic)
        self.run_dir = make_run_dir(args)
        self.writer = open_writer(args, self.run_dir)
        self.video_dir = os.path.join(self.run_dir, "videos") if args.capture_video else None
        self.batch_size = args.num_envs * args.num_steps
        self.num_iterations = math.ceil(args.total_timesteps / self.batch_size)
        self.recent_returns = collections.deque(self.stats["recent_returns"], maxlen=20)
        self.episodes = []  # the episodes that ended in the current rollout
        self.logged_step = -math.inf  # the step at which the losses were last logged
        self.staleness, self.pushes = [], [0] * args.num_workers  # of each push; pushes of each worker
        self.interrupted = self.failed = False
        self.stopped_by = None  # the signal that stopped the run, if one did

    def normalisation(self) -> tuple[Optional[RunningMeanStd], Optional[RunningMeanStd]]:
        """The running statistics of observations and returns: the checkpoint's, or new ones."""
        if self.checkpoint:
            self.obs_rms, self.return_rms = self.checkpoint["obs_rms"], self.checkpoint["return_rms"]
        else:
            self.obs_rms = RunningMeanStd(shape=(self.obs_dim,)) if self.args.norm_obs else None
            self.return_rms = RunningMeanStd(shape=()) if self.args.norm_reward else None
        self.obs_rms, self.return_rms = (rms and SharedRunningMeanStd(rms) for rms in (self.obs_rms, self.return_rms))
        return self.obs_rms, self.return_rms

    def start(self, agent: Agent, optimizer: torch.optim.Optimizer) -> None:
        """Once the shared agent and the optimiser exist: restore them from the checkpoint."""
        self.agent, self.optimizer = agent, optimizer
        if self.checkpoint:
            agent.load_state_dict(self.checkpoint["agent"])
            optimizer.load_state_dict(self.checkpoint["optimizer"])
            optimizer.param_groups[0]["lr"] = self.args.learning_rate  # the flag, not the saved rate

    def supervise(self, worker, agent: Agent, optimizer: torch.optim.Optimizer) -> None:
        """Start --num-workers processes running worker(); log their reports until they have dealt
        out the steps, a Ctrl-C or SIGTERM stops them (after their pushes in progress), or one fails."""
        context = mp.get_context("spawn")  # a fresh interpreter per worker, as on macOS and Windows
        self.workers, self.stop = WorkerRun(self, context), None
        self.start_time = self.last_print = self.last_save = time.perf_counter()
        self.start_step = self.global_step
        with StopOnSignal() as self.signals:
            print(f"A3C on {self.args.env_id}: {self.num_iterations - self.global_step // self.batch_size:,} "
                  f"updates of {self.batch_size} steps by {self.args.num_workers} worker(s); logging to {self.run_dir}")
            processes = [context.Process(target=run_worker, args=(worker, index, agent, optimizer, self.workers),
                                         daemon=True) for index in range(self.args.num_workers)]
            ignored = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
            for process in processes:  # inheriting "ignore": a Ctrl-C is for the main process to pass on
                process.start()
            for sig, handler in ignored.items():
                signal.signal(sig, handler)
            try:
                while any(process.is_alive() for process in processes) or not self.workers.reports.empty():
                    try:  # a push's episodes, losses, learning rate and staleness; or why a worker failed
                        report = self.workers.reports.get(timeout=0.1)
                        self.fail(report) if isinstance(report, str) else self.log(*report)
                    except queue.Empty:
                        pass
                    if self.signals.requested and not self.workers.stop.is_set():  # they stop after this push
                        self.interrupted, self.stopped_by = True, self.signals.requested
                        self.workers.stop.set()
                    dead = [(i, p.exitcode) for i, p in enumerate(processes) if p.exitcode not in (None, 0)]
                    if dead and not self.failed and self.workers.reports.empty():  # its own report first, if any
                        self.fail("worker {} died (exit status {}; -N: killed by signal N)".format(*dead[0]))
                        break  # the others may wait for ever on a lock it held (the counter's, the queue's)
            finally:  # the loop's end, or an exception (a second Ctrl-C): no worker outlives the run
                for process in processes:
                    process.kill()
                    process.join()

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
        self.global_step += self.batch_size

    def log(self, index: int, episodes: list, losses: dict, learning_rate: float, staleness: int) -> None:
        """For each push worker `index` reports: its rollout's episodes; every 500 steps or so, the
        losses, how well V_φ' fitted the returns before it, the learning rate, steps/s, the staleness."""
        self.episodes += [(steps, env, time.perf_counter(), *episode) for steps, env, *episode in episodes]
        self._end_rollout()
        self.staleness.append(staleness)
        self.pushes[index] += 1
        now, total = time.perf_counter(), self.num_iterations * self.batch_size
        sps = (self.global_step - self.start_step) / (now - self.start_time)
        # tensorboard takes some 40 µs a scalar: updates of 40 steps (a2c.py's) would spend a tenth of
        # the run on them, so the losses are logged once in 500 steps or more, and at the end.
        if self.global_step - self.logged_step >= 500 or self.global_step >= total or self.stop:
            self.logged_step = self.global_step
            self.writer.add_scalar("charts/learning_rate", learning_rate, self.global_step)
            self.writer.add_scalar("charts/SPS", sps, self.global_step)
            self.writer.add_scalar("charts/staleness", np.mean(self.staleness[-100:]), self.global_step)
            for key, value in losses.items():
                self.writer.add_scalar(f"losses/{key}", value, self.global_step)
        if now - self.last_print >= 5.0 or self.global_step >= total or self.stop:
            self.last_print = now
            print_progress(self.global_step, total, self.recent_returns, sps)
        if self.args.checkpoint_every and now - self.last_save >= self.args.checkpoint_every:
            write_summary(self, [], self.save(), in_progress=True)  # what a run killed now goes on from

    def fail(self, error: str) -> None:
        """A worker failed (a non-finite loss, an error, or it died): stop. The last good weights stay."""
        print(f"{ALGORITHM}.py: error: training stopped at step {self.global_step}: {error}", file=sys.stderr)
        self.failed = True
        self.workers.stop.set()

    def save(self) -> Optional[str]:
        """The checkpoint as the run stands: at the end, on Ctrl-C or SIGTERM, and every
        --checkpoint-every seconds. Never over a good one with weights or statistics that are not
        finite. Its path, or None if not saved."""
        self.last_save = time.perf_counter()
        self.stats.update(recent_returns=list(self.recent_returns),
                          wall_seconds=self.previous_seconds + self.last_save - self.start_time)
        finite = (all(torch.isfinite(p).all() for p in self.agent.parameters())
                  and all(np.isfinite(rms.var).all() for rms in (self.obs_rms, self.return_rms) if rms is not None))
        if not (self.args.save_model and finite):
            return None
        path = os.path.join(self.run_dir, f"{self.args.exp_name}.pt")
        save_checkpoint(path, {
            "algorithm": ALGORITHM, "obs_dim": self.obs_dim, "action_space": describe(self.action_space),
            "agent": self.agent.state_dict(), "optimizer": self.optimizer.state_dict(),
            "obs_rms": plain(self.obs_rms), "return_rms": plain(self.return_rms), "global_step": self.global_step,
            "stats": self.stats, "args": asdict(self.args)})
        return path

    def extra(self) -> dict:
        """summary.json's own fields: each worker's pushes, and their staleness, since the run (re)started."""
        return {"pushes": self.pushes, "staleness_mean": float(np.mean(self.staleness)) if self.staleness else None,
                "staleness_max": max(self.staleness, default=None)}

    def finish(self) -> dict:
        """After the last update: save the checkpoint, evaluate, write summary.json; return it."""
        checkpoint = self.save()
        eval_returns = []
        if not (self.interrupted or self.failed):
            try:
                eval_returns = evaluate(self.agent, self.env_id, self.obs_rms, self.args.eval_episodes,
                                        self.args.seed + 10_000, self.device, self.args.eval_greedy)
            except KeyboardInterrupt:  # Ctrl-C: the checkpoint is saved, only the evaluation is cut short
                self.stopped_by = "SIGINT"
        summary = write_summary(self, eval_returns, checkpoint, self.extra())
        report_end(self, summary, eval_returns)
        return summary


class WorkerRun:
    """A worker's side of the run, pickled into its process: the settings, the shared statistics, the
    counter that deals out rollouts, the count of pushes (θ's version), the stop flag, the reports."""

    def __init__(self, run: Run, context):
        self.args, self.env_id, self.obs_dim, self.video_dir = run.args, run.env_id, run.obs_dim, run.video_dir
        self.obs_rms, self.return_rms, self.num_iterations = run.obs_rms, run.return_rms, run.num_iterations
        self.device = torch.device("cuda" if run.args.cuda and torch.cuda.is_available() else "cpu")
        self.start_step, self.main_pid, self.episodes = run.global_step, os.getpid(), []
        self.dealt = context.Value("q", run.global_step // run.batch_size)  # rollouts, over all workers
        self.versions = context.Value("q", 0)  # pushes into θ, φ in this run
        self.stop, self.reports = context.Event(), context.Queue()

    def iterations(self):
        """The rollouts dealt to this worker, numbered over all workers', until all are dealt, the
        main process asks the workers to stop, or it is gone."""
        while not self.stop.is_set() and os.getppid() == self.main_pid:
            with self.dealt.get_lock():
                iteration, self.dealt.value = self.dealt.value, self.dealt.value + 1
            if iteration >= self.num_iterations:
                return
            self.pulled = self.versions.value  # pushes θ, φ have had before the pull
            yield iteration

    def episode_ended(self, *episode) -> None:  # (steps into the rollout, env, return, length)
        self.episodes.append(episode)

    def log(self, losses: dict, optimizer: Push, batch: dict) -> None:
        """After each push: count it; report it with the rollout's episodes, the losses, the learning
        rate and the staleness, the pushes of other workers between the pull and this one."""
        with self.versions.get_lock():
            staleness, self.versions.value = self.versions.value - self.pulled, self.versions.value + 1
        losses = {**losses, "explained_variance": explained_variance(batch["values"], batch["returns"])}
        self.reports.put((self.index, self.episodes, losses, optimizer.param_groups[0]["lr"], staleness))
        self.episodes = []

    def fail(self, error: FloatingPointError) -> None:
        """A non-finite loss or gradient: the main process stops the workers and keeps the last good weights."""
        self.reports.put(f"worker {self.index}: {error}")


def run_worker(worker, index: int, agent: Agent, optimizer: torch.optim.Optimizer, run: WorkerRun) -> None:
    """What each worker's process runs: worker(), seeded (worker 0 as a2c.py's run is); if it raises,
    one line on why to the main process. Only worker 0 films."""
    run.index, run.video_dir = index, run.video_dir if index == 0 else None
    run.seed = run.args.seed + run.start_step + index * run.args.num_envs
    torch.set_num_threads(run.args.torch_threads)
    seed_everything(run.args.seed + run.start_step + index, run.args.torch_deterministic)
    try:
        resolve_env_id(run.args.env_id)  # registers the user's env in this process too
        worker(index, agent, optimizer, run)
    except Exception as error:
        where = traceback.extract_tb(error.__traceback__)[-1]
        run.reports.put(f"worker {index} failed: {f'{type(error).__name__}: {error}'.splitlines()[0]} "
                        f"({os.path.basename(where.filename)}:{where.lineno})")
        sys.exit(1)  # after the report is in the pipe


class SharedRunningMeanStd(RunningMeanStd):
    """gymnasium's running statistics in one float64 tensor in shared memory (spawn hands each worker
    its handle), which assigning the mean, var or count writes into; unlocked, two updates may race."""

    def __init__(self, rms: RunningMeanStd):  # a copy of rms
        memory = torch.zeros(2 * rms.mean.size + 1, dtype=torch.float64).share_memory_()
        self.__setstate__({"shape": rms.mean.shape, "memory": memory})
        self.mean, self.var, self.count = rms.mean, rms.var, rms.count

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)  # the views unpickled are copies: made again, of the shared memory
        size, memory = (len(self.memory) - 1) // 2, self.memory.numpy()  # numpy views of the shared memory
        self.views = (memory[:size].reshape(self.shape), memory[size:2 * size].reshape(self.shape), memory[2 * size:])

    mean = property(lambda self: self.views[0], lambda self, value: np.copyto(self.views[0], value))
    var = property(lambda self: self.views[1], lambda self, value: np.copyto(self.views[1], value))
    count = property(lambda self: float(self.views[2][0]), lambda self, value: self.views[2].__setitem__(0, value))


def plain(rms: Optional[RunningMeanStd]) -> Optional[RunningMeanStd]:
    """Shared running statistics copied into gymnasium's own class, for the checkpoint and evaluation."""
    if rms is None:
        return None
    copy = RunningMeanStd(shape=rms.shape)
    copy.mean, copy.var, copy.count = rms.mean.copy(), rms.var.copy(), rms.count
    return copy


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
    "total_timesteps": "count", "num_envs": "count", "num_steps": "count", "eval_episodes": "count",
    "torch_threads": "count", "gamma": "fraction", "gae_lambda": "fraction", "learning_rate": "positive",
    "max_grad_norm": "positive", "ent_coef": "non-negative", "vf_coef": "non-negative",
    "checkpoint_every": "non-negative",
    "num_workers": "count",
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


class NormalizeReward(gym.wrappers.NormalizeReward):
    """gymnasium's wrapper, its running statistics updated by update_with_one."""

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.discounted_reward = self.discounted_reward * self.gamma * (1 - terminated) + float(reward)
        if self.update_running_mean:
            update_with_one(self.return_rms, self.discounted_reward[0])
        return obs, reward / np.sqrt(self.return_rms.var + self.epsilon), terminated, truncated, info


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


def explained_variance(predicted: torch.Tensor, target: torch.Tensor) -> float:
    """1 - Var(target - predicted) / Var(target): 1 for a perfect critic, 0 for a constant."""
    var_target = target.var()
    return float("nan") if var_target == 0 else float(1 - (target - predicted).var() / var_target)


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


def evaluate(agent: Agent, env_id: str, obs_rms: Optional[RunningMeanStd], episodes: int, seed: int,
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
                action = (agent.greedy_action if greedy else agent.sample_action)(obs_tensor).cpu().numpy()
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
    agent = Agent(obs_dim, action_space).to(device)
    agent.load_state_dict(checkpoint["agent"])
    video_dir = (os.path.join(os.path.dirname(os.path.abspath(checkpoint_file(args.eval_checkpoint))), "videos", "eval")
                 if args.capture_video else None)
    returns = evaluate(agent, env_id, checkpoint["obs_rms"], args.eval_episodes, args.seed + 10_000, device,
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
