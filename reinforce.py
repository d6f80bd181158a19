"""REINFORCE: the Monte-Carlo policy gradient, with reward-to-go.

The idea of this file, the first rung of the ladder: improve a stochastic policy π_θ(a|s) by
gradient ascent on its expected return, with a gradient estimated from sampled episodes alone.

The objective is the expected return of a trajectory τ = (s_0, a_0, r_0, s_1, a_1, r_1, ...):

    J(θ) = E_{τ ~ π_θ}[ R(τ) ],   R(τ) = Σ_t γ^t r_t

Log-derivative trick: ∇_θ p(τ|θ) = p(τ|θ) ∇_θ log p(τ|θ), so the gradient of the expectation is
the expectation of something we can sample:

    ∇J(θ) = Σ_τ ∇p(τ|θ) R(τ) = Σ_τ p(τ|θ) ∇log p(τ|θ) R(τ) = E_τ[ ∇log p(τ|θ) R(τ) ]

The dynamics drop out. p(τ|θ) = ρ(s_0) Π_t π_θ(a_t|s_t) P(s_{t+1}|s_t, a_t), and only the π_θ
factors depend on θ, so ∇log p(τ|θ) = Σ_t ∇log π_θ(a_t|s_t): no model of the env is needed.

    ∇J(θ) = E_τ[ Σ_t ∇log π_θ(a_t|s_t) R(τ) ]                              whole-return weights

Reward-to-go: an action cannot change the rewards that came before it. Those terms have zero
mean, because E_{a~π_θ}[∇log π_θ(a|s)] = ∇Σ_a π_θ(a|s) = ∇1 = 0, so dropping them leaves the
expectation alone and removes their noise:

    ∇J(θ) = E_τ[ Σ_t ∇log π_θ(a_t|s_t) G_t ],   G_t = Σ_{k≥t} γ^{k-t} r_k      reward-to-go
                                                      (exact for γ = 1; for γ < 1 see below)

From a batch D of complete episodes, the estimate is the sample mean, and it is the gradient of a
pseudo-loss that autograd can differentiate (w_t is G_t, or R(τ) with --no-reward-to-go):

    ĝ    =  1/|D| Σ_{τ∈D} Σ_t ∇log π_θ(a_t|s_t) w_t
    L(θ) = -1/|D| Σ_{τ∈D} Σ_t  log π_θ(a_t|s_t) w_t,        ∇L(θ) = -ĝ

L is not a loss in the usual sense. Its weights are constants sampled by the policy of the moment;
its value says nothing about how well the policy does, and its gradient is the policy gradient only
at the θ that collected the batch. So each batch gets one gradient step, then new episodes.

Three honest approximations, as in most implementations:
  - With γ < 1 the exact gradient of the discounted J has a further factor γ^t in each term. It is
    dropped here: γ acts as a horizon that trades bias for variance. With γ = 1 ĝ is unbiased.
  - --norm-weights shifts the batch's weights to zero mean (a constant baseline) and scales them to
    unit std (a step size that adapts to the return scale): less variance, a little bias.
  - An episode cut by a time limit is treated as if it ended there, so the rewards the limit cut
    off are missing from its G_t. reinforce_baseline.py bootstraps that tail from V(s).

A batch is complete episodes: the envs run until the batch holds --batch-steps transitions, then
each env finishes the episode it is in; no episode is cut by the batch. The policy is Categorical
for a Discrete action space and a diagonal Gaussian with a state-independent log σ for a Box one
(the sample is stored, only the copy sent to the env is clipped to the bounds):

    log π_θ(a|s) = z_a - log Σ_b exp z_b                                   z = logits_θ(s)
    log π_θ(a|s) = Σ_i [ -(a_i - μ_θ(s)_i)² / (2σ_i²) - log σ_i - ½ log 2π ]

Defaults (batches of 1000 steps, Adam lr 3e-3, γ 0.99) were tuned on CartPole-v1; README.md gives
the steps each of reinforce.py and reinforce_baseline.py took there to a mean return of 475.

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
class Args:
    # --- experiment -------------------------------------------------------------------------
    exp_name: str = ALGORITHM
    """name of the experiment: it names the run directory and the checkpoint file"""
    env_id: str = "CartPole-v1"
    """gymnasium env id, also `module:EnvName-v0` for an env your own module registers, or
    `module:ClassName` for a gymnasium.Env subclass in your module"""
    seed: int = 1
    """seed of python, numpy, torch and the envs"""
    total_timesteps: int = 200_000
    """env steps to train for, over all envs (the last batch may run past it)"""
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
    """Adam step size of the policy"""
    num_envs: int = 1
    """parallel envs in the vector env"""
    batch_steps: int = 1000
    """transitions per batch: envs run until the batch holds this many, then finish their episodes"""
    gamma: float = 0.99
    """discount factor γ"""
    reward_to_go: bool = True
    """weight log π(a_t|s_t) by the reward-to-go G_t; with --no-reward-to-go by the whole return R(τ)"""
    norm_weights: bool = True
    """shift and scale each batch's weights to zero mean and unit std"""
    norm_obs: bool = False
    """normalise observations by their running mean and std, then clip them to ±10 (for MuJoCo)"""


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


def make_env(env_id: str, obs_rms: Optional[RunningMeanStd] = None, update_stats: bool = True,
             capture_video: bool = False, video_dir: str = ""):
    """A thunk building one env; with capture_video, it records videos of its episodes to
    video_dir. With obs_rms (shared by all envs, carried by the checkpoint), observations are
    normalised by it, and its statistics are frozen if not update_stats."""
    def thunk():
        if capture_video:
            env = gym.make(env_id, render_mode="rgb_array")
            env = gym.wrappers.RecordVideo(env, video_dir, disable_logger=True)
        else:
            env = gym.make(env_id)
        if obs_rms is not None:
            env = gym.wrappers.NormalizeObservation(env)
            env.obs_rms, env.update_running_mean = obs_rms, update_stats
            env = gym.wrappers.TransformObservation(env, lambda obs: np.clip(obs, -10, 10), env.observation_space)
        return env
    return thunk


def make_vec_env(args: Args, env_id: str, obs_rms, video_dir: str) -> gym.vector.VectorEnv:
    """num_envs copies in one process, autoreset in the same step (so final_obs is at hand)."""
    thunks = [make_env(env_id, obs_rms, True, args.capture_video and i == 0, video_dir)
              for i in range(args.num_envs)]
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


class Policy(nn.Module):
    """π_θ(a|s), a 64-64 tanh MLP: Categorical over its logits for a Discrete action space, or a
    diagonal Gaussian with mean μ_θ(s) and a state-independent learned log σ for a Box one."""

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
        if self.discrete:
            log_probs = torch.log_softmax(self.actor(obs), dim=-1)  # z_a - log Σ_b exp z_b
            logprob = log_probs.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)
            entropy = -(log_probs.exp() * log_probs).sum(-1)
            return logprob, entropy
        mean, log_std = self.actor(obs), self.log_std
        z = (actions - mean) / log_std.exp()
        logprob = (-0.5 * z ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)  # Σ_i log N(a_i; μ_i, σ_i²)
        entropy = (0.5 + 0.5 * math.log(2 * math.pi) + log_std).sum(-1).expand(len(obs))
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


# ------------------------------------------------------------------------ the math, and the update
def rewards_to_go(rewards: np.ndarray, gamma: float, last_value: float = 0.0) -> np.ndarray:
    """G_t = r_t + γ G_{t+1} for one episode, from G_T = last_value after its last reward.

    reinforce.py always passes last_value = 0: the episode's return ends with it, even when a time
    limit cut it short (the bias its docstring names).
    """
    returns = np.zeros(len(rewards), dtype=np.float64)
    future = last_value
    for t in reversed(range(len(rewards))):
        future = rewards[t] + gamma * future  # G_t = r_t + γ G_{t+1}
        returns[t] = future
    return returns


def compute_weights(episodes: list[dict], gamma: float, reward_to_go: bool, normalise: bool) -> np.ndarray:
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


def collect_batch(envs: gym.vector.VectorEnv, policy: Policy, batch_steps: int, device: torch.device) -> dict:
    """Run the policy in every env until the batch holds batch_steps transitions of complete
    episodes: each env finishes the episode it is in; episodes it starts after that are dropped.

    Returns the batch's episodes, each a dict of its steps' arrays and how it ended, and the env
    steps taken, dropped steps included.
    """
    num_envs = envs.num_envs
    box = isinstance(envs.single_action_space, gym.spaces.Box)
    obs, _ = envs.reset()  # each batch starts new episodes: none runs on from an older policy
    running = [collections.defaultdict(list) for _ in range(num_envs)]
    collecting = np.ones(num_envs, dtype=bool)
    episodes, batch_size, env_steps = [], 0, 0
    while collecting.any():
        with torch.inference_mode():
            action = policy.sample_action(torch.as_tensor(obs, dtype=torch.float32, device=device)).cpu().numpy()
        env_action = np.clip(action, envs.single_action_space.low, envs.single_action_space.high) if box else action
        next_obs, reward, terminated, truncated, info = envs.step(env_action)
        env_steps += num_envs
        for i in np.flatnonzero(collecting):
            episode = running[i]
            episode["obs"].append(obs[i])
            episode["actions"].append(action[i])
            episode["rewards"].append(reward[i])
            if terminated[i] or truncated[i]:
                episodes.append({"obs": np.array(episode["obs"], dtype=np.float32),
                                 "actions": np.array(episode["actions"]),
                                 "rewards": np.array(episode["rewards"], dtype=np.float64),
                                 "terminated": bool(terminated[i]),
                                 "end_step": env_steps})
                batch_size += len(episode["rewards"])
                running[i] = collections.defaultdict(list)
                collecting[i] = batch_size < batch_steps
        obs = next_obs
    return {"episodes": episodes, "env_steps": env_steps}


def reinforce_update(policy: Policy, optimizer: torch.optim.Optimizer, batch: dict, args: Args,
                     device: torch.device) -> dict:
    """One gradient step on the pseudo-loss of a batch of episodes; returns the diagnostics."""
    episodes = batch["episodes"]
    obs = torch.from_numpy(np.concatenate([e["obs"] for e in episodes])).to(device)
    actions = torch.from_numpy(np.concatenate([e["actions"] for e in episodes])).to(device)
    weights = compute_weights(episodes, args.gamma, args.reward_to_go, args.norm_weights)
    weights = torch.as_tensor(weights, dtype=torch.float32, device=device)
    logprobs, entropy = policy.logprob_entropy(obs, actions)
    loss = policy_loss(logprobs, weights, len(episodes))
    if not torch.isfinite(loss):
        raise FloatingPointError(f"policy loss is {loss.item()}")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    with torch.no_grad():  # how far the step moved the policy on this batch: k3 estimate of KL(old ‖ new)
        log_ratio = policy.logprob_entropy(obs, actions)[0] - logprobs
        approx_kl = ((log_ratio.exp() - 1) - log_ratio).mean()
    return {"policy_loss": loss.item(), "entropy": entropy.mean().item(), "approx_kl": approx_kl.item()}


# ---------------------------------------------------------------------------------- helpers
def validate_args(args: Args) -> None:
    """Raise UsageError for flag values that cannot work, before anything is built."""
    for name in ("total_timesteps", "num_envs", "batch_steps", "eval_episodes", "torch_threads"):
        if getattr(args, name) <= 0:
            raise UsageError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if not 0.0 <= args.gamma <= 1.0:
        raise UsageError(f"--gamma must lie in [0, 1], got {args.gamma}")
    for name in ("learning_rate",):
        if not (getattr(args, name) > 0 and math.isfinite(getattr(args, name))):
            raise UsageError(f"--{name.replace('_', '-')} must be a positive finite number, got {getattr(args, name)}")
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
    return (f"Discrete({action_space.n})" if isinstance(action_space, gym.spaces.Discrete)
            else f"Box{action_space.shape}")


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
        raise UsageError(f"{path} is not a {ALGORITHM}.py checkpoint ({type(e).__name__}: {e})") from None
    if trained != (obs_dim, describe(action_space)):
        raise UsageError(f"checkpoint {path} was trained on {checkpoint['args']['env_id']} "
                         f"({trained[0]} observations, actions {trained[1]}), which does not match this env "
                         f"({obs_dim}, {describe(action_space)}); pass --env-id {checkpoint['args']['env_id']}")
    return checkpoint


def save_checkpoint(path: str, modules: dict, global_step: int, args: Args, stats: dict,
                    obs_rms: Optional[RunningMeanStd], action_space: gym.Space):
    """Save the networks and optimisers in `modules` by name, with all else a resumed run needs."""
    torch.save({**{name: module.state_dict() for name, module in modules.items()},
                "global_step": global_step, "algorithm": ALGORITHM, "obs_dim": modules["policy"].actor[0].in_features,
                "action_space": describe(action_space), "args": asdict(args), "stats": stats,
                "obs_rms": obs_rms}, path + ".tmp")
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
    if checkpoint is None:  # running statistics of the observations, shared by all envs
        obs_rms = RunningMeanStd(shape=(obs_dim,)) if args.norm_obs else None
    else:
        obs_rms = checkpoint["obs_rms"]
        if (obs_rms is not None) != args.norm_obs:
            raise UsageError(f"checkpoint {args.resume} was trained with --norm-obs {obs_rms is not None}; "
                             "resume with the same")
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

    policy = Policy(obs_dim, action_space).to(device)
    optimizer = torch.optim.Adam(policy.parameters(), lr=args.learning_rate)
    modules = {"policy": policy, "optimizer": optimizer}  # what a checkpoint saves and restores
    global_step = 0
    stats = {"recent_returns": [], "steps_to_threshold": None, "seconds_to_threshold": None,
             "wall_seconds": 0.0}
    if checkpoint is not None:
        for name, module in modules.items():
            module.load_state_dict(checkpoint[name])
        global_step, stats = checkpoint["global_step"], checkpoint["stats"]
    recent_returns = collections.deque(stats["recent_returns"], maxlen=20)

    envs = make_vec_env(args, env_id, obs_rms, os.path.join(run_dir, "videos"))
    envs.reset(seed=args.seed + global_step)  # sub-env i gets this seed + i; later resets go on from there

    start_time = time.perf_counter()
    start_step, last_print = global_step, start_time
    previous_seconds = stats["wall_seconds"]
    interrupted = failed = False
    with StopOnSigint() as sigint:
        print(f"{ALGORITHM} on {args.env_id}: batches of {args.batch_steps}+ steps on {device}; "
              f"logging to {run_dir}", flush=True)
        while global_step < args.total_timesteps:
            # --- a batch of complete episodes with the current policy -----------------------------
            batch = collect_batch(envs, policy, args.batch_steps, device)
            for episode in batch["episodes"]:
                step = global_step + episode["end_step"]
                episodic_return = float(episode["rewards"].sum())  # raw: nothing here rescales rewards
                recent_returns.append(episodic_return)
                writer.add_scalar("charts/episodic_return", episodic_return, step)
                writer.add_scalar("charts/episodic_length", len(episode["rewards"]), step)
                if (stats["steps_to_threshold"] is None and threshold is not None
                        and len(recent_returns) == recent_returns.maxlen and np.mean(recent_returns) >= threshold):
                    stats["steps_to_threshold"] = step
                    stats["seconds_to_threshold"] = previous_seconds + time.perf_counter() - start_time
            global_step += batch["env_steps"]

            # --- one step of gradient ascent on J ---------------------------------------------
            try:
                losses = reinforce_update(policy, optimizer, batch, args, device)
            except FloatingPointError as e:
                print(f"{ALGORITHM}.py: error: training stopped at step {global_step}: {e}", file=sys.stderr)
                failed = True
                break

            # --- logging -----------------------------------------------------------------------
            elapsed = time.perf_counter() - start_time
            sps = (global_step - start_step) / elapsed
            writer.add_scalar("charts/learning_rate", optimizer.param_groups[0]["lr"], global_step)
            writer.add_scalar("charts/SPS", sps, global_step)
            writer.add_scalar("charts/batch_episodes", len(batch["episodes"]), global_step)
            for key, value in losses.items():
                writer.add_scalar(f"losses/{key}", value, global_step)
            now = time.perf_counter()
            if now - last_print >= 5.0 or global_step >= args.total_timesteps or sigint.requested:
                last_print = now
                recent = f"{np.mean(recent_returns):8.1f}" if recent_returns else "     n/a"
                eta = max(args.total_timesteps - global_step, 0) / max(sps, 1e-9)
                print(f"step {global_step:>9,} ({100 * min(global_step / args.total_timesteps, 1):3.0f}%)"
                      f" | return {recent} (last {len(recent_returns)}) | {sps:7,.0f} steps/s"
                      f" | ETA {format_seconds(eta)}", flush=True)
            if sigint.requested and global_step < args.total_timesteps:
                interrupted = True
                break
    envs.close()

    train_seconds = time.perf_counter() - start_time
    wall_seconds = previous_seconds + train_seconds
    stats.update(recent_returns=list(recent_returns), wall_seconds=wall_seconds)
    checkpoint_path = os.path.join(run_dir, f"{args.exp_name}.pt")
    params_finite = (all(torch.isfinite(p).all() for p in policy.parameters())
                      and (obs_rms is None or np.isfinite(obs_rms.var).all()))
    if args.save_model and params_finite:  # a checkpoint on disk is never replaced by broken weights
        save_checkpoint(checkpoint_path, modules, global_step, args, stats, obs_rms, action_space)
    eval_returns = []
    if not (interrupted or failed):
        eval_returns = evaluate(policy, env_id, obs_rms, args.eval_episodes, args.seed + 10_000, device)
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
        "checkpoint": checkpoint_path if args.save_model and params_finite else None, "run_dir": run_dir,
        "args": asdict(args),
    }
    with open(os.path.join(run_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    if interrupted:
        resume_hint = f"; continue with --resume {checkpoint_path}" if args.save_model else ""
        print(f"interrupted at step {global_step:,}{resume_hint}", flush=True)
    elif not failed:
        print(f"eval: mean return {summary['eval_return']:.1f} ± {summary['eval_return_std']:.1f} over "
              f"{len(eval_returns)} greedy episodes (training: {summary['final_return']:.1f}, "
              f"{wall_seconds:.1f}s, {summary['sps']:,.0f} steps/s)", flush=True)
    return summary


# --------------------------------------------------------------------------------- evaluate
def evaluate(policy: Policy, env_id: str, obs_rms: Optional[RunningMeanStd], episodes: int, seed: int,
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
                action = policy.greedy_action(obs_tensor).cpu().numpy()
            action = np.clip(action, env.action_space.low, env.action_space.high) if box else int(action)
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
    policy = Policy(obs_dim, action_space).to(device)
    policy.load_state_dict(checkpoint["policy"])
    video_dir = (os.path.join(os.path.dirname(os.path.abspath(args.eval_checkpoint)), "videos", "eval")
                 if args.capture_video else None)
    returns = evaluate(policy, env_id, checkpoint["obs_rms"], args.eval_episodes, args.seed + 10_000, device,
                       video_dir)
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
            sys.exit(130 if summary["interrupted"] else 1 if summary["failed"] else 0)
    except UsageError as error:
        print(f"{ALGORITHM}.py: error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("aborted without saving", file=sys.stderr)
        sys.exit(130)
