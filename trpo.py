"""Trust region policy optimisation (TRPO): the natural gradient, with a KL trust region.

The idea this file adds to a2c.py: measure the size of a policy step by how much it changes the
policy, not the parameters. A2C steps along the gradient with a learning rate, and the same step
in θ can move π_θ a little or a lot, depending on where θ is. TRPO takes the step that improves a
surrogate objective the most among those whose mean KL divergence from the current policy stays
within δ, found with the conjugate gradient method and checked by a line search.

The surrogate. For policies π (the current one, θ_old) and π', with advantages A^π of π,

    J(π') = J(π) + Σ_s ρ_π'(s) Σ_a π'(a|s) A^π(s,a)      ρ_π(s) = Σ_t γ^t P(s_t = s | π), unnormalised

Swapping ρ_π' for ρ_π, whose states we have, and importance-weighting the actions gives

    L_π(π') = J(π) + Σ_s ρ_π(s) Σ_a π(a|s) · π'(a|s) / π(a|s) · A^π(s,a)

which agrees with J(π') to first order at π' = π. Its sample estimate, without the constant and
(as is usual) weighting every visited state alike instead of by γ^t, is

    L(θ) = mean_t[ w_t(θ) Â_t ],   w_t(θ) = π_θ(a_t|s_t) / π_θold(a_t|s_t)      surrogate

and ∇L(θ_old) = g is the policy gradient a2c.py follows. How far may we trust it? The paper's
Theorem 1, with total variation bounded by KL (its eq. 9), bounds the true value from below
(ε = max |A^π|):

    J(π') ≥ L_π(π') - C · max_s KL(π(·|s) ‖ π'(·|s)),   C = 4εγ / (1-γ)²          lower bound

Both sides are equal at π' = π, so a π' that maximises the right side never makes J worse (the
paper's Algorithm 1 iterates exactly this), but C is so large that the steps would be tiny. TRPO
keeps the idea and turns the penalty into a constraint, on the mean KL over the visited states
(which samples can estimate), with a step size δ:

    maximise L(θ)   subject to   KL̄(θ) = mean_t[ KL(π_θold(·|s_t) ‖ π_θ(·|s_t)) ] ≤ δ

The natural gradient. Near θ_old, L is linear and KL̄ quadratic: KL̄ and its gradient are zero at
θ_old, so its second-order term comes first,

    L(θ_old + Δ) - L(θ_old) ≈ gᵀΔ,      KL̄(θ_old + Δ) ≈ ½ Δᵀ F Δ
    F = ∇²KL̄(θ_old) = mean_t E_{a~π_θold(·|s_t)}[ ∇log π_θ(a|s_t) ∇log π_θ(a|s_t)ᵀ ]     Fisher

F, the Hessian of the KL, is the Fisher information matrix: the metric that measures a step by
the change in the distribution it makes, whatever the parametrisation. Maximising gᵀΔ on the
ellipsoid ½ ΔᵀFΔ = δ gives (Lagrange) Δ ∝ F⁻¹g, the natural gradient (Kakade 2001), scaled to
the boundary:

    s = F⁻¹g,   Δ = √(2δ / sᵀFs) · s                                             the step

(δ is the trust region here; the TD errors δ_t of compute_gae are another δ.)

Conjugate gradient. F has as many rows as the policy has parameters (about 5,000 here), too big
to form and invert at each update. The conjugate gradient method solves Fs = g using only
products Fv. Each is a Hessian-vector product: ∇KL̄ is built once, differentiably, and each
product is then one more backward pass through it,

    F v = ∇_θ[ (∇_θ KL̄(θ))ᵀ v ]                                                 Fisher-vector product

A few iterations (--cg-iters) give a good direction. A damping term β (--cg-damping) solves with
F + βI instead, which keeps the system well conditioned where the samples pin down few directions
of F; the step formula then uses the same damped matrix, so the step meets ½ Δᵀ(F + βI)Δ = δ and
the quadratic model of the KL stays a little below δ.

The line search. The step came from a quadratic model of the KL and a linear one of L; both
can be wrong for a step of that size. So the step is tried at Δ, αΔ, α²Δ, ... (--backtrack-coef
α, --backtrack-iters) and the first one with the measured KL̄ ≤ δ and L(θ) > L(θ_old) is taken.
If none is, the policy stays exactly as it was for this batch. --no-line-search takes the full
step without these checks (only a non-finite result is refused): the truncated natural policy
gradient (TNPG) of Duan et al. (2016).

The rest is a2c.py's, without the entropy bonus: N envs stepped together with SAME_STEP
autoreset, GAE(λ) advantages with a truncation bootstrapped from V(final_obs), normalised per
batch. The policy has no learning rate; δ sets its step. The critic V_φ(s), with parameters φ of
its own, is fitted separately after the policy step, by several epochs of minibatch Adam steps
on ½ (V_φ(s_t) - R̂_t)², R̂_t = Â_t + V_φ(s_t). --norm-obs and
--norm-reward (for MuJoCo) use gymnasium's running statistics, saved in the checkpoint and frozen
for evaluation, as in a2c.py. For a Gaussian with mean μ and log σ (state-independent, as here),

    KL(π_old ‖ π_θ) = Σ_i [ log σ_i - log σ_old,i + (σ_old,i² + (μ_old,i - μ_i)²) / (2σ_i²) - ½ ]
    KL(π_old ‖ π_θ) = Σ_a π_old(a|s) (log π_old(a|s) - log π_θ(a|s))               Categorical

Defaults (4 envs x 128 steps, δ 0.01, 10 CG iterations, damping 0.1, γ 0.99, λ 0.98, critic Adam lr
1e-3 for 20 epochs of 2 minibatches, 100k steps) were tuned on CartPole-v1; README.md gives the
settings used for MuJoCo.

References:
    Schulman, Levine, Moritz, Jordan, Abbeel (2015). Trust Region Policy Optimization. ICML.
        arXiv:1502.05477
    Kakade (2001). A Natural Policy Gradient. NeurIPS.
    Kakade, Langford (2002). Approximately Optimal Approximate Reinforcement Learning. ICML.
    Duan, Chen, Houthooft, Schulman, Abbeel (2016). Benchmarking Deep Reinforcement Learning for
        Continuous Control (TNPG). arXiv:1604.06778
    Nocedal, Wright (2006). Numerical Optimization, chapter 5: the conjugate gradient method.
    Schulman, Moritz, Levine, Jordan, Abbeel (2016). High-Dimensional Continuous Control
        Using Generalized Advantage Estimation. arXiv:1506.02438

Example:
    python trpo.py --env-id CartPole-v1 --seed 1
    python trpo.py --eval-checkpoint runs/<run>/trpo.pt
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
from typing import Optional

import numpy as np
import torch
import torch.nn as nn
import gymnasium as gym
import tyro
from gymnasium.wrappers.utils import RunningMeanStd
from torch.utils.tensorboard import SummaryWriter

ALGORITHM = "trpo"  # names this script in its messages, checkpoints and summary.json


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

    # --- algorithm: the policy step ------------------------------------------------------------
    max_kl: float = 0.01
    """δ, the trust region: the largest mean KL(π_old ‖ π_new) a policy step may make"""
    cg_iters: int = 10
    """conjugate gradient iterations for the direction s ≈ F⁻¹g"""
    cg_damping: float = 0.1
    """β added to the Fisher matrix (F + βI) for a well-conditioned solve"""
    line_search: bool = True
    """backtrack until the step keeps KL ≤ δ and improves the surrogate; --no-line-search takes the full
    step unchecked, unless it is not finite (truncated natural policy gradient)"""
    backtrack_coef: float = 0.8
    """the line search shrinks the step by this factor each time"""
    backtrack_iters: int = 10
    """the most steps the line search tries before it keeps the old policy"""
    # --- algorithm: rollouts and the critic ------------------------------------------------------
    num_envs: int = 4
    """parallel envs in the vector env"""
    num_steps: int = 128
    """steps per env in each rollout; a rollout (one policy step) is num_envs * num_steps transitions"""
    gamma: float = 0.99
    """discount factor γ"""
    gae_lambda: float = 0.98
    """GAE λ: 1 gives returns to the end of the rollout minus V, 0 one-step TD errors"""
    norm_adv: bool = True
    """normalise each rollout's advantages to zero mean and unit std"""
    learning_rate: float = 1e-3
    """step size of the critic's Adam optimiser (the policy has none: δ sets its step)"""
    critic_epochs: int = 20
    """passes of the critic's regression over each rollout"""
    num_minibatches: int = 2
    """minibatches each rollout is split into for the critic's regression"""
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
    """The actor π_θ(a|s) and the critic V_φ(s), separate 64-64 tanh MLPs. The actor is
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

    def policy_parameters(self) -> list[nn.Parameter]:
        """θ of the policy: the actor's weights and, for a Gaussian, log σ. The trust-region step
        moves these; the critic has its own optimiser."""
        return list(self.actor.parameters()) + ([] if self.discrete else [self.log_std])

    def distribution(self, obs: torch.Tensor):
        """What defines π_θ(·|s) in each state: the log-probabilities of all actions, or the
        Gaussian's mean and log σ."""
        out = self.actor(obs)
        return torch.log_softmax(out, dim=-1) if self.discrete else (out, self.log_std.expand_as(out))

    def kl_from(self, old, obs: torch.Tensor) -> torch.Tensor:
        """KL(π_old(·|s) ‖ π_θ(·|s)) per state, where `old` is what distribution(obs) gave for π_old."""
        new = self.distribution(obs)
        if self.discrete:  # Σ_a π_old(a|s) (log π_old(a|s) - log π_θ(a|s))
            return (old.exp() * (old - new)).sum(-1)
        (mean_old, log_std_old), (mean, log_std) = old, new
        return (log_std - log_std_old + ((2 * log_std_old).exp() + (mean_old - mean) ** 2)
                / (2 * (2 * log_std).exp()) - 0.5).sum(-1)


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


def value_loss(values: torch.Tensor, returns: torch.Tensor) -> torch.Tensor:
    """½ E[(V_φ(s) - R̂)²]."""
    return 0.5 * ((values - returns) ** 2).mean()


def explained_variance(predicted: torch.Tensor, target: torch.Tensor) -> float:
    """1 - Var(target - predicted) / Var(target): 1 is a perfect critic, 0 no better than a constant."""
    var_target = target.var(correction=0)
    return float("nan") if var_target == 0 else float(1 - (target - predicted).var(correction=0) / var_target)


def surrogate(agent: Agent, obs: torch.Tensor, actions: torch.Tensor, advantages: torch.Tensor,
              old_logprobs: torch.Tensor) -> torch.Tensor:
    """L(θ) = mean_t[ π_θ(a_t|s_t) / π_old(a_t|s_t) · Â_t ]: its gradient at θ_old is the policy gradient."""
    logprobs, _ = agent.logprob_entropy(obs, actions)
    return ((logprobs - old_logprobs).exp() * advantages).mean()


def flat_grad(output: torch.Tensor, params: list[torch.Tensor], **kwargs) -> torch.Tensor:
    """∂output/∂θ for the parameters `params`, as one flat vector."""
    return torch.cat([grad.reshape(-1) for grad in torch.autograd.grad(output, params, **kwargs)])


def fisher_vector_product(agent: Agent, obs: torch.Tensor, old, damping: float):
    """The function v ↦ (F + βI) v, β the damping, where F is the Hessian of the mean
    KL(π_old ‖ π_θ) over the states `obs` at θ = θ_old (`old` is agent.distribution(obs) there,
    detached): the Fisher matrix. F is never formed; each product is a Hessian-vector product by
    double backprop."""
    params = agent.policy_parameters()
    mean_kl = agent.kl_from(old, obs).mean()
    grad_kl = flat_grad(mean_kl, params, create_graph=True)  # ∇KL̄, kept differentiable (it is 0 at θ_old)

    def product(v: torch.Tensor) -> torch.Tensor:
        return flat_grad(grad_kl @ v, params, retain_graph=True) + damping * v  # ∇[(∇KL̄)ᵀv] = F v
    return product


def conjugate_gradient(matrix_vector_product, b: torch.Tensor, iters: int, residual_tol: float = 1e-10):
    """Approximately solve A x = b for a symmetric positive-definite A known only through the
    products A v, starting at x = 0. Each iteration minimises ½ xᵀAx - bᵀx exactly along a new
    direction A-conjugate to the earlier ones; n iterations solve an n x n system exactly (up to
    rounding). Stops early once the squared residual |b - Ax|² is below residual_tol."""
    x = torch.zeros_like(b)
    residual = b.clone()  # r = b - A x
    direction = b.clone()  # p
    residual_sq = residual @ residual
    for _ in range(iters):
        if residual_sq <= residual_tol:
            break
        a_direction = matrix_vector_product(direction)
        alpha = residual_sq / (direction @ a_direction)  # the minimiser along p: α = rᵀr / pᵀAp
        x = x + alpha * direction
        residual = residual - alpha * a_direction
        new_residual_sq = residual @ residual
        direction = residual + (new_residual_sq / residual_sq) * direction  # β = r'ᵀr' / rᵀr
        residual_sq = new_residual_sq
    return x


def trpo_step(agent: Agent, obs: torch.Tensor, actions: torch.Tensor, advantages: torch.Tensor, args: Args) -> dict:
    """One trust-region step of the policy on a batch (flat tensors); returns its diagnostics.

    The policy's parameters end either at an accepted θ or exactly where they were: when the
    gradient is zero (all advantages equal), the conjugate gradient fails, or no step the line
    search tries keeps KL̄ ≤ δ and improves the surrogate. The diagnostics describe the policy
    the step ends with: policy_loss is -L there (-L(θ_old) = -mean Â when nothing moved),
    kl_after_step and approx_kl are 0 for a policy that did not move, and line_search_steps
    counts the candidate steps tried (1 is the full step, 0 means there was no direction).
    """
    params = agent.policy_parameters()
    with torch.no_grad():
        old = agent.distribution(obs)  # π_old, fixed
        old_logprobs, entropy = agent.logprob_entropy(obs, actions)
    surrogate_old = surrogate(agent, obs, actions, advantages, old_logprobs)  # L(θ_old) = mean Â
    g = flat_grad(surrogate_old, params)
    product = fisher_vector_product(agent, obs, old, args.cg_damping)
    s = conjugate_gradient(product, g, args.cg_iters)  # s ≈ F⁻¹g, the natural gradient
    s_f_s = s @ product(s)
    diagnostics = {"policy_loss": -surrogate_old.item(), "entropy": entropy.mean().item(), "step_accepted": 0.0,
                   "line_search_steps": 0, "kl_after_step": 0.0, "surrogate_improvement": 0.0,
                   "approx_kl": 0.0, "grad_norm": g.norm().item()}
    if not (torch.isfinite(s).all() and torch.isfinite(s_f_s) and s_f_s > 0 and g @ s > 0):
        return diagnostics  # no ascent direction to step in: the policy stays as it is
    full_step = torch.sqrt(2 * args.max_kl / s_f_s) * s  # Δ = √(2δ / sᵀFs) s, on the edge of the quadratic region
    theta_old = nn.utils.parameters_to_vector(params).detach()
    with torch.no_grad():
        tries = args.backtrack_iters if args.line_search else 1
        for k in range(tries):  # Δ, αΔ, α²Δ, ...: the first that keeps KL̄ ≤ δ and improves L
            nn.utils.vector_to_parameters(theta_old + args.backtrack_coef ** k * full_step, params)
            mean_kl = agent.kl_from(old, obs).mean()
            improvement = surrogate(agent, obs, actions, advantages, old_logprobs) - surrogate_old
            diagnostics["line_search_steps"] = k + 1
            finite = torch.isfinite(mean_kl) and torch.isfinite(improvement)
            if finite and (not args.line_search or (mean_kl <= args.max_kl and improvement > 0)):
                log_ratio = agent.logprob_entropy(obs, actions)[0] - old_logprobs
                diagnostics.update(step_accepted=1.0, kl_after_step=mean_kl.item(),
                                   surrogate_improvement=improvement.item(),
                                   policy_loss=-(surrogate_old + improvement).item(),
                                   approx_kl=((log_ratio.exp() - 1) - log_ratio).mean().item())  # k3 estimate
                return diagnostics
        nn.utils.vector_to_parameters(theta_old, params)  # nothing acceptable: back to θ_old, exactly
    return diagnostics


def trpo_update(agent: Agent, optimizer: torch.optim.Optimizer, rollout: dict, args: Args) -> dict:
    """On one rollout (tensors of shape (T, N, ...)): the policy's trust-region step, then the
    critic's regression by minibatch Adam steps. Returns the diagnostics."""
    with torch.no_grad():  # Â_t and R̂_t from the critic as it was during the rollout
        values = agent.value(rollout["obs"])
        next_values = agent.value(rollout["next_obs"])
        advantages = compute_gae(rollout["rewards"], values, next_values, rollout["terminations"],
                                 rollout["truncations"], args.gamma, args.gae_lambda)
        returns = advantages + values  # R̂_t = Â_t + V(s_t), before any normalising of Â
        if args.norm_adv:
            advantages = (advantages - advantages.mean()) / (advantages.std(correction=0) + 1e-8)
    if not torch.isfinite(returns).all():
        raise FloatingPointError("the returns are not finite (a reward or a value is NaN or infinite)")
    flat = lambda x: x.reshape(-1, *x.shape[2:])  # (T, N, ...) -> (T * N, ...)
    obs, returns = flat(rollout["obs"]), flat(returns)
    diagnostics = trpo_step(agent, obs, flat(rollout["actions"]), flat(advantages), args)

    diagnostics.update(value_loss=value_loss(flat(values), returns).item(),  # the critic's error before its fit
                       explained_variance=explained_variance(flat(values), returns))
    for _ in range(args.critic_epochs):
        for minibatch in torch.randperm(len(obs), device=obs.device).tensor_split(args.num_minibatches):
            loss = value_loss(agent.value(obs[minibatch]), returns[minibatch])
            if not torch.isfinite(loss):
                raise FloatingPointError(f"the critic's loss is {loss.item()}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return diagnostics


# ---------------------------------------------------------------------------------- helpers
def validate_args(args: Args) -> None:
    """Raise UsageError for flag values that cannot work, before anything is built."""
    for name in ("total_timesteps", "num_envs", "num_steps", "eval_episodes", "torch_threads", "cg_iters",
                 "backtrack_iters", "critic_epochs", "num_minibatches"):
        if getattr(args, name) <= 0:
            raise UsageError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    for name in ("gamma", "gae_lambda"):
        if not 0.0 <= getattr(args, name) <= 1.0:
            raise UsageError(f"--{name.replace('_', '-')} must lie in [0, 1], got {getattr(args, name)}")
    for name in ("learning_rate", "max_kl"):
        if not (getattr(args, name) > 0 and math.isfinite(getattr(args, name))):
            raise UsageError(f"--{name.replace('_', '-')} must be a positive finite number, got {getattr(args, name)}")
    if not (args.cg_damping >= 0 and math.isfinite(args.cg_damping)):
        raise UsageError(f"--cg-damping must be a finite number ≥ 0, got {args.cg_damping}")
    if not 0.0 < args.backtrack_coef < 1.0:
        raise UsageError(f"--backtrack-coef must lie strictly between 0 and 1, got {args.backtrack_coef}")
    if args.num_envs * args.num_steps < args.num_minibatches:
        raise UsageError(f"a rollout of --num-envs {args.num_envs} x --num-steps {args.num_steps} transitions "
                         f"cannot be split into --num-minibatches {args.num_minibatches}")
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
    optimizer = torch.optim.Adam(agent.critic.parameters(), lr=args.learning_rate, eps=1e-5)  # the critic's
    global_step = 0
    stats = {"recent_returns": [], "steps_to_threshold": None, "seconds_to_threshold": None,
             "wall_seconds": 0.0, "largest_kl_after_step": 0.0, "rejected_steps": 0}
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
        print(f"TRPO on {args.env_id}: {num_iterations - global_step // batch_size:,} updates of {batch_size} "
              f"steps on {device}; logging to {run_dir}", flush=True)
        for iteration in range(global_step // batch_size, num_iterations):
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

            # --- the policy's trust-region step, then the critic's fit -------------------------
            rollout = {name: torch.from_numpy(buf).to(device) for name, buf in (
                ("obs", obs_buf), ("next_obs", next_obs_buf), ("actions", actions_buf), ("rewards", rewards_buf),
                ("terminations", terminations_buf), ("truncations", truncations_buf))}
            try:
                losses = trpo_update(agent, optimizer, rollout, args)
            except FloatingPointError as e:
                print(f"{ALGORITHM}.py: error: training stopped at step {global_step}: {e}", file=sys.stderr)
                failed = True
                break
            if losses["step_accepted"]:
                stats["largest_kl_after_step"] = max(stats["largest_kl_after_step"], losses["kl_after_step"])
            else:
                stats["rejected_steps"] += 1

            # --- logging -----------------------------------------------------------------------
            elapsed = time.perf_counter() - start_time
            sps = (global_step - start_step) / elapsed
            writer.add_scalar("charts/learning_rate", optimizer.param_groups[0]["lr"], global_step)  # the critic's
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
        "largest_kl_after_step": stats["largest_kl_after_step"], "rejected_steps": stats["rejected_steps"],
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
