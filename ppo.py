"""Proximal Policy Optimization (PPO) with the clipped surrogate objective, discrete actions.

The idea this file adds to a2c.py, by way of trpo.py: reuse each rollout for several epochs of
minibatch steps, and keep the policy near the one that collected it by clipping a probability
ratio, where TRPO solves a constrained problem.

Why a ratio. A2C's gradient is an expectation under π_θ, so a rollout is spent after one step: once
θ moves, the data comes from another policy. Importance sampling reweighs it: for actions drawn by
π_θold, E_{a~π_θ}[f(a)] = E_{a~π_θold}[ρ_t(θ) f(a)], ρ_t(θ) = π_θ(a_t|s_t) / π_θold(a_t|s_t).
TRPO maximises the advantage so reweighed, L_θold(θ) = Ê_t[ρ_t(θ) Â_t], whose gradient at θold is
A2C's. It models the true improvement only near θold (the states still come from π_θold), so TRPO
keeps the mean KL(π_θold ‖ π_θ) within δ, at the price of conjugate gradients and a line search.
PPO takes plain gradient steps on a surrogate that stops rewarding a move gone far enough:

    L^CLIP(θ) = Ê_t[ min( ρ_t(θ) Â_t,  clip(ρ_t(θ), 1 - ε, 1 + ε) Â_t ) ]          maximised

Inside [1 - ε, 1 + ε] it is L_θold. Once ρ_t has moved ε the way Â_t favours, the term is constant:
its gradient is 0, and nothing pushes further; a move the other way is still paid in full (the min
makes L^CLIP a pessimistic bound). A cheap trust region, not a hard one: a ratio can still leave
the band, by one step's overshoot, by Adam's momentum, or pushed through the shared weights by other
samples' gradients, and nothing bounds the KL. --target-kl puts a rough bound back: the epochs
stop once a minibatch's approximate KL is over.

The paper's other objectives (--objective) keep TRPO's KL as a penalty instead of a constraint:

    L^CPI(θ)   = Ê_t[ ρ_t(θ) Â_t ]                                   plain: no clip, no penalty
    L^KLPEN(θ) = Ê_t[ ρ_t(θ) Â_t - β KL[π_θold(·|s_t), π_θ(·|s_t)] ]   penalty, KL in closed form
    L^CLIP(θ)  as above                                                the default

With kl-adaptive, after each update d = Ê_t[KL] halves β if d < d_targ / 1.5 and doubles it if
d > 1.5 d_targ (adapt_beta); kl-fixed keeps β. On the paper's 7 MuJoCo tasks the clip scored best
(0.82 of the best setting with ε = 0.2, against 0.74 for the adaptive KL and at most 0.72 for a
fixed β; the plain surrogate -0.39). A common reading: one ε suits every task, where a good β
differs by task and over training, and β is adapted only after an update that went too far.

Each update: a rollout with π_θold; log π_θold(a_t|s_t), and Â_t by GAE with R̂_t = Â_t + V_φ(s_t)
as in a2c.py; then --update-epochs passes of --num-minibatches Adam steps, each on

    L(θ, φ) = -L^CLIP(θ) + c_v · ½ Ê_t[(V_φ(s_t) - R̂_t)²] - c_e · Ê_t[H(π_θ(·|s_t))]

(-L^KLPEN or -L^CPI in its place with --objective), then θold ← θ: the next rollout comes from the
updated policy (on the first minibatch ρ_t = 1, and the gradient is A2C's). Defaults tuned on
CartPole-v1; ppo_continuous.py is PPO for Box actions.

Reading map: clipped_policy_loss (L^CLIP, approximate KL, clipfrac), adapt_beta (β), Agent (π_θ,
V_φ, the KL), ppo_loss (L), ppo_update and ppo_step, make_batch (log π_θold, Â_t, R̂_t), train():
down to the PLUMBING banner. Tests show the math: tests/test_ppo.py (the clip blocks the gradient
only in the direction it forbids; ρ_t = 1 on the first minibatch only; --target-kl stops the
epochs), tests/test_ppo_objectives.py (β's rule, the closed-form KL, the penalty pulls π_θ back
toward π_θold), tests/test_gae.py.
make_env turns Discrete (one-hot), Tuple and Dict observations into one vector, as Box ones are.

References:
    Schulman et al. (2017). Proximal Policy Optimization Algorithms. arXiv:1707.06347

Example:
    python ppo.py --env-id CartPole-v1 --seed 1
"""

import collections
import functools
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
from types import SimpleNamespace
from typing import Literal, Optional

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import gymnasium as gym
import tyro
from torch.utils.tensorboard import SummaryWriter

ALGORITHM = "ppo"  # names this script in its messages, checkpoints and summary.json


@dataclass
class Hyperparameters:
    """What the algorithm does; Args, below the PLUMBING banner, adds the run's own flags."""
    env_id: str = "CartPole-v1"
    """gymnasium env id; for your own env `module:EnvName-v0` or `module:ClassName` (README.md)"""
    total_timesteps: int = 100_000
    """env steps to train for, over all envs (rounded up to a whole number of rollouts)"""
    learning_rate: float = 2e-3
    """step size of the optimiser"""
    anneal_lr: bool = True
    """decay the learning rate linearly over the run, to lr / (number of updates) at the last"""
    num_envs: int = 8
    """parallel envs in the vector env"""
    num_steps: int = 32
    """steps per env in each rollout; a rollout is num_envs * num_steps"""
    gamma: float = 0.98
    """discount factor γ"""
    gae_lambda: float = 0.8
    """GAE λ: 0 gives one-step TD errors, 1 the n-step return to the rollout's end, minus V"""
    num_minibatches: int = 4
    """minibatches each rollout is split into"""
    update_epochs: int = 8
    """passes over each rollout"""
    norm_adv: bool = True
    """normalise advantages to zero mean and unit std within each minibatch"""
    clip_coef: float = 0.2
    """ε of the clipped surrogate"""
    clip_vloss: bool = False
    """keep V_φ within ±clip_coef of its old value by a pessimistic max (in return units)"""
    ent_coef: float = 0.0
    """weight c_e of the entropy bonus"""
    vf_coef: float = 0.5
    """weight c_v of the value loss"""
    max_grad_norm: float = 0.5
    """clip the global gradient norm to this"""
    target_kl: Optional[float] = None
    """stop the update's epochs early once a minibatch's approximate KL exceeds this"""
    objective: Literal["clip", "kl-adaptive", "kl-fixed", "plain"] = "clip"
    """the policy's objective: L^CLIP; the surrogate less β·KL, β adapted toward --kl-dtarg or fixed
    at --kl-beta (L^KLPEN); or the plain surrogate (L^CPI, the paper's "no clipping or penalty")"""
    kl_beta: float = 1.0
    """β, the weight of the KL penalty (with kl-adaptive, its first value)"""
    kl_dtarg: float = 0.01
    """d_targ, the mean KL per update that kl-adaptive steers β toward"""


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


def clipped_policy_loss(new_logprob, old_logprob, advantages, clip_coef: float):
    """-L^CLIP(θ); approx_kl, the k3 estimate Ê[(ρ - 1) - log ρ] ≥ 0 of KL(π_θold ‖ π_θ); clipfrac,
    the share of ratios outside [1 - ε, 1 + ε] (those Â_t pushes further lose their gradient)."""
    log_ratio = new_logprob - old_logprob
    ratio = log_ratio.exp()  # ρ_t(θ)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1 - clip_coef, 1 + clip_coef) * advantages
    loss = -torch.min(unclipped, clipped).mean()  # -Ê[min(ρ Â, clip(ρ, 1-ε, 1+ε) Â)]
    with torch.no_grad():
        approx_kl = ((ratio - 1) - log_ratio).mean()
        clipfrac = ((ratio - 1).abs() > clip_coef).float().mean()
    return loss, approx_kl, clipfrac


def adapt_beta(beta: float, kl: float, kl_dtarg: float) -> float:
    """The penalty's β after an update whose mean KL(π_θold ‖ π_θ) was kl: halved if the policy
    moved less than d_targ / 1.5, doubled if more than 1.5 d_targ (the paper's rule)."""
    if kl < kl_dtarg / 1.5:
        return beta / 2
    if kl > 1.5 * kl_dtarg:
        return beta * 2
    return beta


def value_loss(new_value, old_value, returns, clip_coef: Optional[float]):
    """½ Ê[(V_φ(s) - R̂)²]; with clip_coef, the pessimistic max with the clipped value's error."""
    loss = (new_value - returns) ** 2
    if clip_coef is not None:
        clipped_value = old_value + torch.clamp(new_value - old_value, -clip_coef, clip_coef)
        loss = torch.max(loss, (clipped_value - returns) ** 2)
    return 0.5 * loss.mean()


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
    """The actor π_θ(a|s), Categorical over its logits z, and the critic V_φ(s): 64-64 tanh MLPs."""

    def __init__(self, obs_dim: int, action_size: int):
        super().__init__()
        self.critic = mlp(obs_dim, 1, out_std=1.0)
        # A small last layer starts the policy near uniform, so early updates are gentle.
        self.actor = mlp(obs_dim, action_size, out_std=0.01)

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.critic(obs).squeeze(-1)

    def logprob_entropy(self, obs: torch.Tensor, actions: torch.Tensor):
        """log π_θ(a|s) of the given actions and the entropy H(π_θ(·|s)), per state."""
        log_probs = torch.log_softmax(self.actor(obs), dim=-1)  # z_a - log Σ_b exp z_b
        logprob = log_probs.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)
        entropy = -(log_probs.exp() * log_probs).sum(-1)
        return logprob, entropy

    def sample_action(self, obs: torch.Tensor) -> torch.Tensor:
        """a ~ π_θ(·|s): a Categorical draw."""
        out = self.actor(obs)
        # Gumbel-max: argmax_a (z_a - log e_a), e_a ~ Exp(1), is a ~ softmax(z)
        return (out - torch.empty_like(out).exponential_().log()).argmax(-1)

    def greedy_action(self, obs: torch.Tensor) -> torch.Tensor:
        """The most probable action: argmax of the logits."""
        return self.actor(obs).argmax(-1)

    def distribution(self, obs: torch.Tensor) -> torch.Tensor:
        """π_θ(·|s) whole, as the log-probabilities of all actions (a row per state)."""
        return torch.log_softmax(self.actor(obs), dim=-1)

    def kl_from(self, old: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        """KL(π_θold(·|s) ‖ π_θ(·|s)) per state, in closed form; old is distribution(obs) at θold:
        Σ_a π_θold(a|s) (log π_θold(a|s) - log π_θ(a|s))."""
        return (old.exp() * (old - self.distribution(obs))).sum(-1)


# ----------------------------------------------------------------------------------- the update
def ppo_loss(agent: Agent, batch: dict, args: Hyperparameters, beta: float) -> dict:
    """L(θ, φ) on a minibatch, with its parts and the diagnostics approx_kl and clipfrac; the
    policy's part by --objective, β the KL penalty's weight."""
    advantages = batch["advantages"]
    if args.norm_adv:
        advantages = (advantages - advantages.mean()) / (advantages.std(correction=0) + 1e-8)
    logprobs, entropy = agent.logprob_entropy(batch["obs"], batch["actions"])
    # ε = ∞ leaves the plain surrogate Ê[ρ Â], L^CPI, to which the KL penalty adds
    clip_coef = args.clip_coef if args.objective == "clip" else math.inf
    pg_loss, approx_kl, clipfrac = clipped_policy_loss(logprobs, batch["logprobs"], advantages,
                                                       clip_coef)
    if args.objective in ("kl-adaptive", "kl-fixed"):  # -L^KLPEN = -Ê[ρ Â] + β Ê[KL(π_θold ‖ π_θ)]
        pg_loss = pg_loss + beta * agent.kl_from(batch["dist"], batch["obs"]).mean()
    v_loss = value_loss(agent.value(batch["obs"]), batch["values"], batch["returns"],
                        args.clip_coef if args.clip_vloss else None)
    entropy = entropy.mean()
    loss = pg_loss - args.ent_coef * entropy + args.vf_coef * v_loss
    return {"loss": loss, "policy_loss": pg_loss, "value_loss": v_loss, "entropy": entropy,
            "approx_kl": approx_kl, "clipfrac": clipfrac}


def ppo_update(agent: Agent, optimizer: torch.optim.Optimizer, batch: dict, args: Hyperparameters,
               beta: float = 1.0, average_=None, loss_fn=ppo_loss) -> dict:  # hooks: see PLUMBING
    """Epochs of minibatch steps over the batch (flat tensors), stopped early by --target-kl; the
    losses, averaged over the minibatches of the last epoch that took a step, and the mean KL
    from π_θold to the updated π_θ over the batch."""
    batch_size, last_epoch, names, epochs, stopped_early = len(batch["obs"]), [], (), 0, False
    for epoch in range(args.update_epochs):
        epoch_losses = []
        permutation = torch.randperm(batch_size, device=batch["obs"].device)
        for indices in permutation.split(batch_size // args.num_minibatches):
            minibatch = {key: value[indices] for key, value in batch.items()}
            losses = ppo_step(agent, optimizer, minibatch, args, beta, average_, loss_fn)
            if losses is None:
                stopped_early = True
                break
            epoch_losses.append(losses)
        if epoch_losses:
            last_epoch, epochs, names = epoch_losses, epochs + 1, epoch_losses[0]
        if stopped_early:
            break
    means = {key: torch.stack([step[key] for step in last_epoch]).mean().item() for key in names}
    with torch.no_grad():  # d = Ê_t[KL(π_θold ‖ π_θ)], which kl-adaptive steers β by
        kl = agent.kl_from(batch["dist"], batch["obs"]).mean()
    if average_ is not None:
        average_([kl])  # the same d, so the same β, in every process
    penalty = {"kl_beta": beta} if args.objective in ("kl-adaptive", "kl-fixed") else {}
    return {**means, "kl": kl.item(), **penalty, "epochs": epochs, "stopped_early": stopped_early}


def ppo_step(agent: Agent, optimizer: torch.optim.Optimizer, batch: dict, args: Hyperparameters,
             beta: float = 1.0, average_=None, loss_fn=ppo_loss) -> Optional[dict]:
    """One gradient step on L(θ, φ) over a minibatch: its losses, or None if --target-kl stops."""
    losses = loss_fn(agent, batch, args, beta)  # ppo_loss, or its compiled copy (--compile)
    if args.target_kl is not None and average_ is not None:
        average_([losses["approx_kl"]])  # so that all processes stop at the same minibatch
    if args.target_kl is not None and losses["approx_kl"] > args.target_kl:
        return None
    optimizer.zero_grad(set_to_none=True)
    losses["loss"].backward()
    if average_ is not None:  # one all-reduce for the losses and the gradient
        stacked = torch.stack(list(losses.values())).detach()
        average_([stacked, *(p.grad for p in agent.parameters())])
        losses = dict(zip(losses, stacked))
    grad_norm = nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
    if not (torch.isfinite(losses["loss"]) and torch.isfinite(grad_norm)):  # alike on all processes
        said = ", ".join(f"{name} {value.item():.4g}" for name, value in losses.items())
        raise FloatingPointError(f"{said}, gradient norm {grad_norm.item():.4g}")
    optimizer.step()
    return {key: value.detach() for key, value in losses.items()}


# ---------------------------------------------------------------------------------- the rollout
def make_env(env_id: str, video_dir: Optional[str] = None):
    """A thunk building one env that records its episodes' statistics (and videos, to video_dir)."""
    def thunk():
        env = gym.make(env_id, render_mode="rgb_array") if video_dir else gym.make(env_id)
        if video_dir:
            env = gym.wrappers.RecordVideo(env, video_dir, disable_logger=True)
        if not isinstance(env.observation_space, gym.spaces.Box):  # Discrete, Tuple, Dict...: one
            env = gym.wrappers.FlattenObservation(env)             # vector, one-hot per Discrete
        return gym.wrappers.RecordEpisodeStatistics(env)
    return thunk


def make_vec_env(env_id: str, num_envs: int, video_dir: Optional[str] = None):
    """num_envs copies, autoreset in the same step (final_obs at hand); the first one films."""
    thunks = [make_env(env_id, video_dir=video_dir if i == 0 else None) for i in range(num_envs)]
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
    the advantages Â_t by GAE, the value targets R̂_t = Â_t + V_φ(s_t), log π_θold(a_t|s_t) and
    π_θold(·|s_t) whole (for the KL penalty)."""
    with torch.no_grad():
        values = agent.value(rollout["obs"])
        next_values = agent.value(rollout["next_obs"])
        logprobs, _ = agent.logprob_entropy(rollout["obs"], rollout["actions"])
        advantages = compute_gae(rollout["rewards"], values, next_values, rollout["terminations"],
                                 rollout["truncations"], args.gamma, args.gae_lambda)
        dist = agent.distribution(rollout["obs"])  # π_θold(·|s_t) whole, for the KL from it
    batch = {"obs": rollout["obs"], "actions": rollout["actions"], "logprobs": logprobs,
             "dist": dist, "values": values, "advantages": advantages,
             "returns": advantages + values}
    return {key: value.flatten(0, 1) for key, value in batch.items()}  # (T, N, ...) -> (T·N, ...)


# --------------------------------------------------------------------------------------- train
def train(args: "Args") -> Optional[dict]:
    """Train PPO as args say; return the run's summary. Run, below the PLUMBING banner, does
    the rest: checks, seeding, resuming, logging, Ctrl-C, the checkpoint, evaluation, torchrun."""
    run = Run(args)
    envs = make_vec_env(run.env_id, run.num_envs, run.video_dir)  # this process's share of them
    agent = Agent(run.obs_dim, envs.single_action_space.n).to(run.device)
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5, fused=True)
    obs = run.start(envs, agent, optimizer)  # resumes from a checkpoint; resets the envs
    beta = run.kl_beta  # --kl-beta, or where a resumed run left it
    try:
        for iteration in run.iterations():
            if args.anneal_lr:  # linearly: lr at the first update, lr / num_iterations at the last
                done = iteration / run.num_iterations
                optimizer.param_groups[0]["lr"] = args.learning_rate * (1 - done)
            rollout, obs = collect_rollout(envs, agent, obs, args.num_steps, run.device,
                                           run.episode_ended)
            batch = make_batch(agent, rollout, args)
            losses = ppo_update(agent, optimizer, batch, args, beta, run.average_, run.loss_fn)
            if args.objective == "kl-adaptive":  # β follows the update's KL toward d_targ
                beta = run.kl_beta = adapt_beta(beta, losses["kl"], args.kl_dtarg)  # run saves it
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
    compile: bool = False
    """compile the minibatch loss and its gradient with torch.compile (needs a C++ compiler): each
    step runs faster after a first update of some seconds that compiles; deterministic, not equal to eager"""
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
        self.processes = Processes(args)  # this one among those torchrun started, or alone
        self.loss_fn = compiled(ppo_loss) if args.compile else ppo_loss
        self.compile_seconds = None  # with --compile, the seconds until the first update ended
        self.args = args
        self.env_id, self.obs_dim, self.action_space, self.threshold = check_env(args.env_id, args.capture_video)
        torch.set_num_threads(args.torch_threads)
        self.device = self.processes.device
        self.checkpoint = None
        if args.resume:
            self.checkpoint = load_checkpoint(args.resume, self.obs_dim, self.action_space, self.device)
            check_resume(self.checkpoint, args, ())
        self.global_step = self.checkpoint["global_step"] if self.checkpoint else 0
        self.kl_beta = self.checkpoint.get("kl_beta", args.kl_beta) if self.checkpoint else args.kl_beta
        self.stats = self.checkpoint["stats"] if self.checkpoint else {
            "recent_returns": [], "steps_to_threshold": None, "seconds_to_threshold": None, "wall_seconds": 0.0}
        self.previous_seconds = self.stats["wall_seconds"]  # of training, before this run went on
        # A resumed run goes on with fresh random numbers, not those its start drew.
        seed_everything(args.seed + self.global_step + self.processes.rank, args.torch_deterministic)
        self.is_main = self.processes.rank == 0  # of several processes, the first logs and saves
        self.run_dir = make_run_dir(args) if self.is_main else None
        self.writer = open_writer(args, self.run_dir) if self.is_main else SimpleNamespace(
            add_scalar=lambda *args: None, close=lambda: None)  # the other ranks log nothing
        self.video_dir = os.path.join(self.run_dir, "videos") if args.capture_video and self.is_main else None
        self.num_envs, self.average_ = self.processes.num_envs, self.processes.average_
        self.batch_size = args.num_envs * args.num_steps
        self.num_iterations = math.ceil(args.total_timesteps / self.batch_size)
        self.recent_returns = collections.deque(self.stats["recent_returns"], maxlen=20)
        self.episodes = []  # the episodes that ended in the current rollout
        self.logged_step = -math.inf  # the step at which the losses were last logged
        self.interrupted = self.failed = False
        self.stopped_by = None  # the signal that stopped the run, if one did

    def start(self, envs: gym.vector.VectorEnv, agent: Agent, optimizer: torch.optim.Optimizer) -> np.ndarray:
        """Once the envs, the agent and the optimiser exist: restore them from the checkpoint,
        reset the envs; return their first observations."""
        self.envs, self.agent, self.optimizer = envs, agent, optimizer
        if self.checkpoint:
            agent.load_state_dict(self.checkpoint["agent"])
            optimizer.load_state_dict(self.checkpoint["optimizer"])
            optimizer.param_groups[0]["lr"] = self.args.learning_rate  # the flag, not the saved rate
        self.processes.broadcast(agent)  # every process starts from the first one's parameters
        obs, _ = envs.reset(seed=self.args.seed + self.global_step + self.processes.first_env)  # env i: seed + i
        return obs

    def iterations(self):
        """The updates still to run, by index; after a Ctrl-C the loop ends with the update in
        progress. A progress line every few seconds."""
        self.start_time = self.last_print = self.last_save = time.perf_counter()
        self.start_step = self.global_step
        with StopOnSignal() as self.signals:
            print(f"PPO on {self.args.env_id}: {self.num_iterations - self.global_step // self.batch_size:,} "
                  f"updates of {self.batch_size} steps on {self.device}{self.processes.header}; logging to "
                  f"{self.run_dir}", flush=True)
            for iteration in range(self.global_step // self.batch_size, self.num_iterations):
                yield iteration
                if self.stop and iteration < self.num_iterations - 1:
                    self.interrupted, self.stopped_by = True, self.signals.requested
                    return

    def episode_ended(self, steps: int, env: int, episodic_return: float, length: int) -> None:
        """Called by the rollout for each episode that ends, `steps` env steps into it."""
        steps, env = steps * self.processes.size, self.processes.first_env + env  # over all processes
        self.episodes.append((steps, env, time.perf_counter(), episodic_return, length))

    def _end_rollout(self) -> None:
        """Count the rollout's steps; log its episodes, in order, and note when the mean return
        of the last 20 first reached the env's threshold."""
        self.stop, ended = self.processes.gather(self.signals.requested, self.episodes)
        ended, self.episodes = sorted(ended), []
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

    def log(self, losses: dict, optimizer: torch.optim.Optimizer, batch: dict) -> None:
        """After each update: its rollout's episodes; every 500 steps or so, the losses, how well
        V_φ fitted the returns before it, the learning rate, steps/s."""
        self._end_rollout()
        if self.args.compile and self.compile_seconds is None:  # the first update compiles
            self.compile_seconds = time.perf_counter() - self.start_time
            if self.is_main:
                print(f"--compile: the first rollout and update, which compiles, took {self.compile_seconds:.1f}s",
                      flush=True)
        now, total = time.perf_counter(), self.num_iterations * self.batch_size
        sps = (self.global_step - self.start_step) / (now - self.start_time)
        # tensorboard takes some 40 µs a scalar: updates of 40 steps (a2c.py's) would spend a tenth of
        # the run on them, so the losses are logged once in 500 steps or more, and at the end.
        if self.global_step - self.logged_step >= 500 or self.global_step >= total or self.stop:
            self.logged_step = self.global_step
            self.writer.add_scalar("charts/learning_rate", optimizer.param_groups[0]["lr"], self.global_step)
            self.writer.add_scalar("charts/SPS", sps, self.global_step)
            losses = {**losses, "explained_variance": explained_variance(batch["values"], batch["returns"])}
            for key, value in losses.items():
                self.writer.add_scalar(f"losses/{key}", value, self.global_step)
        if now - self.last_print >= 5.0 or self.global_step >= total or self.stop:
            self.last_print = now
            print_progress(self.global_step, total, self.recent_returns, sps)
        if self.is_main and self.args.checkpoint_every and now - self.last_save >= self.args.checkpoint_every:
            write_summary(self, [], self.save(), self.compiling(), in_progress=True)  # what a run killed goes on from

    def compiling(self) -> Optional[dict]:
        """What summary.json adds with --compile."""
        return {"compile_seconds": self.compile_seconds} if self.args.compile else None

    def fail(self, error: FloatingPointError) -> None:
        """A non-finite loss or gradient: stop. The weights on disk are the last good ones."""
        self._end_rollout()  # on every process alike: the loss is averaged over them
        if self.is_main:
            print(f"{ALGORITHM}.py: error: training stopped at step {self.global_step}: {error}", file=sys.stderr)
        self.failed = True

    def save(self) -> Optional[str]:
        """The checkpoint as the run stands: at the end, on Ctrl-C or SIGTERM, and every
        --checkpoint-every seconds. Never over a good one with weights or statistics that are not
        finite. Its path, or None if not saved."""
        self.last_save = time.perf_counter()
        self.stats.update(recent_returns=list(self.recent_returns),
                          wall_seconds=self.previous_seconds + self.last_save - self.start_time)
        finite = all(torch.isfinite(p).all() for p in self.agent.parameters())
        if not (self.args.save_model and finite):
            return None
        path = os.path.join(self.run_dir, f"{self.args.exp_name}.pt")
        save_checkpoint(path, {
            "algorithm": ALGORITHM, "obs_dim": self.obs_dim, "action_space": describe(self.action_space),
            "agent": self.agent.state_dict(), "optimizer": self.optimizer.state_dict(),
            "global_step": self.global_step, "kl_beta": self.kl_beta, "stats": self.stats,
            "args": asdict(self.args)})
        return path

    def finish(self) -> Optional[dict]:
        """After the last update: save the checkpoint, evaluate, write summary.json; return it."""
        self.envs.close()
        self.processes.leave()
        if not self.is_main:  # of several processes, the first reports
            return None
        checkpoint = self.save()
        eval_returns = []
        if not (self.interrupted or self.failed):
            try:
                eval_returns = evaluate(self.agent, self.env_id, self.args.eval_episodes,
                                        self.args.seed + 10_000, self.device, self.args.eval_greedy)
            except KeyboardInterrupt:  # Ctrl-C: the checkpoint is saved, only the evaluation is cut short
                self.stopped_by = "SIGINT"
        summary = write_summary(self, eval_returns, checkpoint, self.compiling())
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
    "total_timesteps": "count", "num_envs": "count", "num_steps": "count", "eval_episodes": "count",
    "torch_threads": "count", "gamma": "fraction", "gae_lambda": "fraction", "learning_rate": "positive",
    "max_grad_norm": "positive", "ent_coef": "non-negative", "vf_coef": "non-negative",
    "num_minibatches": "count", "update_epochs": "count", "clip_coef": "positive", "target_kl": "positive",
    "kl_beta": "positive", "kl_dtarg": "positive",
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
    if isinstance(action_space, gym.spaces.Box):
        raise UsageError(f"{name} has continuous actions; {ALGORITHM}.py needs a discrete action space, "
                         "use ppo_continuous.py")
    if not isinstance(action_space, gym.spaces.Discrete):
        raise UsageError(f"{name} has a {type(action_space).__name__} action space; {ALGORITHM}.py needs "
                         "a Discrete one")
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
def compiled(loss_fn):
    """--compile: loss_fn under torch.compile. Its C++ backend builds kernels with the compiler
    torch.compile uses (g++, or $CXX) and Python's headers: without them, a UsageError now."""
    import shutil, sysconfig  # only --compile needs them
    compiler = os.environ.get("CXX", "g++")
    if shutil.which(compiler) is None:
        raise UsageError(f"--compile needs a C++ compiler ({compiler}), not found: install one "
                         f"(apt install g++) or set $CXX, or run without --compile")
    if not os.path.isfile(os.path.join(sysconfig.get_paths()["include"], "Python.h")):
        raise UsageError("--compile needs Python's C headers (Python.h), not found: install them "
                         "(apt install python3-dev) or run without --compile")
    compiled_fn = torch.compile(loss_fn)
    # β goes in as a tensor: as a float it would be compiled in, and each new β compile anew
    return lambda agent, batch, args, beta: compiled_fn(agent, batch, args, torch.tensor(beta))


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
GREEDY = "greedy"  # how evaluation acts, in messages: argmax_a π_θ(a|s)


def acting(args: Args) -> str:
    """How evaluation acts, in messages."""
    return GREEDY if args.eval_greedy else "sampled"


def evaluate(agent: Agent, env_id: str, episodes: int, seed: int, device: torch.device,
             greedy: bool = True, video_dir: Optional[str] = None) -> list[float]:
    """Returns of `episodes` episodes with the greedy action argmax_a π_θ(a|s), or with actions
    sampled from π_θ if not greedy."""
    env = make_env(env_id, video_dir=video_dir)()
    torch.manual_seed(seed)  # sampled actions are the same each time
    space, act = env.action_space, agent.greedy_action if greedy else agent.sample_action
    returns = []
    obs, _ = env.reset(seed=seed)
    for _ in range(episodes):
        done, episodic_return = False, 0.0
        while not done:
            with torch.inference_mode():
                obs_tensor = torch.as_tensor(np.asarray(obs, dtype=np.float32), device=device)
                action = int(act(obs_tensor)) + int(space.start)
            obs, reward, terminated, truncated, _ = env.step(action)
            episodic_return += float(reward)
            done = terminated or truncated
        returns.append(episodic_return)
        obs, _ = env.reset()
    env.close()
    return returns


def evaluate_checkpoint(args: Args) -> list[float]:
    """--eval-checkpoint: load the policy saved at that path and run episodes."""
    if int(os.environ.get("RANK", 0)):  # under torchrun, the first process alone evaluates
        return []
    validate_args(args, FLAG_RULES)
    env_id, obs_dim, action_space, _ = check_env(args.env_id, args.capture_video)
    torch.set_num_threads(args.torch_threads)
    device = torch.device("cuda" if args.cuda and torch.cuda.is_available() else "cpu")
    checkpoint = load_checkpoint(args.eval_checkpoint, obs_dim, action_space, device)
    agent = Agent(obs_dim, action_space.n).to(device)
    agent.load_state_dict(checkpoint["agent"])
    video_dir = (os.path.join(os.path.dirname(os.path.abspath(checkpoint_file(args.eval_checkpoint))), "videos", "eval")
                 if args.capture_video else None)
    returns = evaluate(agent, env_id, args.eval_episodes, args.seed + 10_000, device, args.eval_greedy, video_dir)
    print(f"eval: mean return {np.mean(returns):.1f} ± {np.std(returns):.1f} over {len(returns)} {acting(args)} "
          f"episodes of {args.env_id} (checkpoint at step {checkpoint['global_step']:,})", flush=True)
    return returns


# ------------------------------------------------------------ several processes (torchrun)
# `torchrun --nproc-per-node N ppo.py ...` starts N copies of this script, the ranks 0 .. N-1.
# Each steps num_envs / N of the envs and computes the loss on its share of every minibatch; the
# mean of the ranks' gradients, by an all-reduce (ppo_step's average_), is the gradient over the
# whole minibatch, so all take the same Adam step and their parameters stay identical. The flags
# mean what they mean in one process, except that --norm-adv normalises each rank's share alone.
class Processes:
    """This process among those torchrun started: its rank, its share of the envs, its device,
    and what the ranks share. A process started alone (WORLD_SIZE unset or 1) shares nothing."""

    def __init__(self, args: Args):
        """Check the environment torchrun set and the split of the work, then meet the other ranks
        at MASTER_ADDR:MASTER_PORT (backend gloo on the CPU, nccl on CUDA); UsageError otherwise."""
        self.size, self.rank = int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("RANK", 0))
        missing = [name for name in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") if name not in os.environ]
        if self.size > 1 and missing:
            raise UsageError(f"WORLD_SIZE is {self.size} but {', '.join(missing)} not set: start several "
                             "processes with torchrun (see README.md), or unset WORLD_SIZE to run one")
        share = args.num_envs // self.size * args.num_steps  # of the batch
        if args.num_envs % self.size:
            raise UsageError(f"--num-envs {args.num_envs} does not split over {self.size} processes: pass a "
                             f"multiple of {self.size}")
        if share % args.num_minibatches:
            per_process = f", {share} per process," if self.size > 1 else ""
            raise UsageError(f"the batch of --num-envs {args.num_envs} x --num-steps {args.num_steps} = "
                             f"{args.num_envs * args.num_steps}{per_process} does not split into "
                             f"--num-minibatches {args.num_minibatches}")
        self.device = torch.device("cpu")
        if args.cuda and torch.cuda.is_available():  # one GPU per process
            if int(os.environ.get("LOCAL_WORLD_SIZE", 1)) > torch.cuda.device_count():
                raise UsageError(f"{os.environ['LOCAL_WORLD_SIZE']} processes on this machine but "
                                 f"{torch.cuda.device_count()} GPUs: start at most one per GPU, or pass --no-cuda")
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        self.num_envs = args.num_envs // self.size
        self.first_env = self.rank * self.num_envs  # env i of this rank is env first_env + i of all
        self.average_ = None if self.size == 1 else functools.partial(average_over_ranks_, world_size=self.size)
        self.header = "" if self.size == 1 else f" ({self.size} processes x {self.num_envs} envs)"
        if self.size > 1:
            if self.device.type == "cuda":
                torch.cuda.set_device(self.device)
            try:
                dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo", rank=self.rank,
                                        world_size=self.size)
            except (ValueError, dist.DistError) as e:
                raise UsageError(f"cannot join the other processes at {os.environ['MASTER_ADDR']}:"
                                 f"{os.environ['MASTER_PORT']}: {str(e).splitlines()[0]}") from None
            if self.rank != 0:  # rank 0 alone prints
                sys.stdout = open(os.devnull, "w")

    def broadcast(self, agent: Agent) -> None:
        """Rank 0's parameters, on every rank."""
        for parameter in agent.parameters() if self.size > 1 else ():
            dist.broadcast(parameter.data, src=0)

    def gather(self, stop: bool, episodes: list) -> tuple[bool, list]:
        """Whether any rank was asked to stop (a Ctrl-C to any stops them all), and the episodes of
        every rank, on every rank."""
        if self.size == 1:
            return stop, episodes
        gathered = [None] * self.size
        dist.all_gather_object(gathered, (stop, episodes))
        return any(s for s, _ in gathered), [episode for _, rank_episodes in gathered for episode in rank_episodes]

    def leave(self) -> None:
        if self.size > 1:
            dist.destroy_process_group()
            gc.collect()  # free the group's leftovers now: freed at interpreter exit, they aborted a rank


def average_over_ranks_(tensors: list[torch.Tensor], world_size: int) -> None:
    """Replace each tensor, in place, by its mean over the ranks: one all-reduce of them all."""
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)  # the sum over ranks, on every rank
    flat /= world_size
    for t, mean in zip(tensors, flat.split([t.numel() for t in tensors])):
        t.copy_(mean.view_as(t))


def exit_process(status: int) -> None:
    """sys.exit(status); under torchrun, os._exit(status) once the output is flushed: the
    interpreter's shutdown met gloo's threads and now and then aborted a rank (SIGABRT)."""
    if int(os.environ.get("WORLD_SIZE", 1)) > 1:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    sys.exit(status)


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
            # 143 (128 + 15) after SIGTERM, as a process it killed reports, 130 (128 + 2) after Ctrl-C
            exit_process(143 if summary["signal"] == "SIGTERM" else 130 if summary["signal"]
                         else 1 if summary["failed"] else 0)
    except UsageError as error:
        # Under torchrun the processes on one machine share flags, files and packages, so they fail
        # alike: local rank 0 says why, the others leave it to it (exiting first, they would have
        # torchrun stop it before it could).
        if "TORCHELASTIC_RUN_ID" in os.environ and os.environ.get("LOCAL_RANK", "0") != "0":
            exit_process(0)
        print(f"{ALGORITHM}.py: error: {error}", file=sys.stderr)
        exit_process(2)
    except SaveError as error:
        print(f"{ALGORITHM}.py: error: {error}", file=sys.stderr)
        exit_process(1)
    except KeyboardInterrupt:
        if os.environ.get("RANK", "0") == "0":
            print("aborted without saving", file=sys.stderr)
        exit_process(130)
