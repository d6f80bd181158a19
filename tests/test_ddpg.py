"""ddpg.py: the deterministic policy gradient against the chain rule by hand, the target networks,
clipped double Q, truncation against termination, the replay buffer and the noise; learning;
determinism; Ctrl-C and resume; bad input.
"""

import json
import os
import signal
import subprocess
import sys
import time

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn as nn

import ddpg
from conftest import ROOT, check_help, check_usage_error, learning_seeds, read_scalars, run_script

IDENTITY = dict(env_id="user_envs:ContinuousIdentityRegistered-v0", gamma=0.0, hidden_size=64, batch_size=64,
                learning_starts=200)


# ------------------------------------------------------------------------------------- the math
class KnownQ(nn.Module):
    """Q(s, a) = -Σ_i (a_i - (M s)_i)²: its gradient in a is -2 (a - M s), by hand."""

    def __init__(self, m: torch.Tensor):
        super().__init__()
        self.m = m

    def forward(self, obs, actions):
        return -((actions - obs @ self.m.T) ** 2).sum(-1)


def test_the_actors_gradient_is_the_chain_rule_through_the_critic():
    """∇_θ L(θ) = -(1/B) Σ_s (∂μ_θ(s)/∂θ)ᵀ ∇_a Q(s, a)|_{a=μ_θ(s)}: the Jacobian of μ_θ by torch.func, the
    critic's gradient by hand, and actor_loss's autograd gradient agree."""
    torch.manual_seed(0)
    agent = ddpg.Agent(3, 2, twin_q=False, hidden=8)
    m = torch.randn(2, 3)
    agent.critics[0] = KnownQ(m)
    obs = torch.randn(5, 3)
    agent.actor.zero_grad()
    ddpg.actor_loss(agent, obs).backward()
    params = dict(agent.actor.named_parameters())
    for name, param in params.items():
        expected = torch.zeros_like(param)
        for s in obs:
            a = agent.actor(s).detach()
            grad_a = -2 * (a - m @ s)  # ∇_a Q, by hand
            jacobian = torch.func.jacrev(lambda p: torch.func.functional_call(agent.actor, {**params, name: p}, (s,)))(
                param.detach())  # (action, *param.shape)
            expected -= torch.einsum("a,a...->...", grad_a, jacobian) / len(obs)
        torch.testing.assert_close(param.grad, expected, rtol=1e-5, atol=1e-6)


def test_a_step_on_the_actor_moves_its_action_up_the_critic():
    """With a known Q whose best action is M s, Adam steps on L(θ) bring μ_θ(s) toward it."""
    torch.manual_seed(0)
    agent = ddpg.Agent(3, 2, twin_q=False, hidden=16)
    m = 0.3 * torch.randn(2, 3)
    agent.critics[0] = KnownQ(m)
    obs = torch.randn(64, 3)
    optimizer = torch.optim.Adam(agent.actor.parameters(), lr=1e-2)
    before = ddpg.actor_loss(agent, obs).item()
    for _ in range(50):
        optimizer.zero_grad()
        ddpg.actor_loss(agent, obs).backward()
        optimizer.step()
    assert ddpg.actor_loss(agent, obs).item() < 0.2 * before


def test_polyak_moves_the_targets_by_exactly_tau():
    torch.manual_seed(0)
    agent = ddpg.Agent(3, 2, twin_q=True, hidden=8)
    with torch.no_grad():  # targets apart from the online networks, as after some training
        for p in agent.actor.parameters():
            p.add_(torch.randn_like(p))
    old = [p.clone() for p in agent.actor_target.parameters()]
    ddpg.polyak_update(agent.actor_target, agent.actor, 0.1)
    for before, target, online in zip(old, agent.actor_target.parameters(), agent.actor.parameters()):
        torch.testing.assert_close(target, 0.1 * online + 0.9 * before)
    assert not any(p.requires_grad for p in agent.actor_target.parameters())
    # τ = 1 copies; τ = 0 leaves the targets where they are
    ddpg.polyak_update(agent.critics_target, agent.critics, 1.0)
    assert all(torch.equal(a, b) for a, b in zip(agent.critics_target.parameters(), agent.critics.parameters()))


@pytest.mark.parametrize("policy_frequency", [1, 2])
def test_an_update_moves_the_targets_only_with_the_actor(policy_frequency):
    """DDPG moves the actor and the targets at every update; TD3's delay, every second one."""
    torch.manual_seed(0)
    args = ddpg.Hyperparameters(policy_frequency=policy_frequency, tau=0.5)
    agent = ddpg.Agent(3, 2, twin_q=policy_frequency == 2, hidden=8)
    actor_optimizer = torch.optim.Adam(agent.actor.parameters(), lr=1e-2)
    critic_optimizer = torch.optim.Adam(agent.critics.parameters(), lr=1e-2)
    batch = random_batch(16, 3, 2)
    for step in range(4):
        actor_before = [p.clone() for p in agent.actor.parameters()]
        target_before = [p.clone() for p in agent.actor_target.parameters()]
        losses = ddpg.ddpg_update(agent, actor_optimizer, critic_optimizer, batch, args,
                                  update_actor=step % policy_frequency == 0)
        moved = not all(torch.equal(a, b) for a, b in zip(actor_before, agent.actor.parameters()))
        targets_moved = not all(torch.equal(a, b) for a, b in zip(target_before, agent.actor_target.parameters()))
        assert moved == targets_moved == (step % policy_frequency == 0) == ("policy_loss" in losses)


def random_batch(size: int, obs_dim: int, action_dim: int, terminations=None) -> dict:
    return {"obs": torch.randn(size, obs_dim), "actions": torch.rand(size, action_dim) * 2 - 1,
            "rewards": torch.randn(size), "next_obs": torch.randn(size, obs_dim),
            "terminations": torch.zeros(size) if terminations is None else terminations}


def test_the_clipped_double_q_target_is_the_smaller_of_the_two_critics():
    """The critic loss ddpg_update reports is Σ_i Ê[(Q_i(s, a) - y)²] with y built from min_i Q'_i,
    computed here by hand; with one critic, from that one."""
    torch.manual_seed(0)
    for twin in (True, False):
        agent = ddpg.Agent(3, 2, twin_q=twin, hidden=8)
        with torch.no_grad():  # make the target critics disagree
            for p in agent.critics_target[-1].parameters():
                p.add_(0.5 * torch.randn_like(p))
        batch = random_batch(32, 3, 2, terminations=(torch.arange(32) % 4 == 0).float())
        with torch.no_grad():
            next_actions = agent.actor_target(batch["next_obs"])
            next_q = [critic(batch["next_obs"], next_actions) for critic in agent.critics_target]
            smaller = torch.minimum(*next_q) if twin else next_q[0]
            torch.testing.assert_close(agent.target_q(batch["next_obs"], next_actions), smaller)
            y = batch["rewards"] + 0.99 * (1 - batch["terminations"]) * smaller
            expected = sum(((critic(batch["obs"], batch["actions"]) - y) ** 2).mean() for critic in agent.critics)
        if twin:
            assert not torch.equal(next_q[0], next_q[1])
        losses = ddpg.ddpg_update(agent, torch.optim.Adam(agent.actor.parameters()),
                                  torch.optim.Adam(agent.critics.parameters()), batch,
                                  ddpg.Hyperparameters(gamma=0.99), update_actor=False)
        assert losses["value_loss"] == pytest.approx(expected.item(), rel=1e-6)


def test_the_td_target_bootstraps_unless_the_episode_terminated():
    rewards, next_q = torch.tensor([1.0, 1.0, 1.0]), torch.tensor([10.0, 10.0, float("nan")])
    terminations = torch.tensor([0.0, 1.0, 1.0])  # the first: a truncation or no end at all
    assert ddpg.td_target(rewards, terminations, next_q, 0.9).tolist() == [10.0, 1.0, 1.0]


def test_target_smoothing_noise_is_clipped_and_keeps_actions_in_bounds():
    torch.manual_seed(0)
    actions = torch.rand(10_000, 2) * 2 - 1
    smoothed = ddpg.smoothed_target_action(actions, std=5.0, clip=0.3)
    assert (smoothed - actions).abs().max() <= 0.3 + 1e-6 and smoothed.abs().max() <= 1.0
    assert (smoothed - actions).abs().mean() > 0.1  # it did add noise


# -------------------------------------------------------------------- buffer, noise and the step
def test_the_replay_buffer_wraps_around_and_samples_uniformly():
    buffer = ddpg.ReplayBuffer(10, 1, 1)
    for i in range(15):
        buffer.add([i], [0.0], float(i), [i + 1], 0.0)
    assert (buffer.size, buffer.position) == (10, 5)
    assert sorted(buffer.rewards.tolist()) == list(range(5, 15))  # the 5 oldest were overwritten
    np.random.seed(0)
    batch = buffer.sample(100_000, torch.device("cpu"))
    torch.testing.assert_close(batch["next_obs"][:, 0], batch["obs"][:, 0] + 1)  # rows stay whole
    counts = np.bincount(batch["rewards"].numpy().astype(int), minlength=15)[5:]
    assert np.all(np.abs(counts / 100_000 - 0.1) < 0.005), counts  # each 10%, within 5 standard errors


def test_ornstein_uhlenbeck_noise_is_correlated_and_restarts():
    np.random.seed(0)
    noise = ddpg.OrnsteinUhlenbeckNoise(0.2, 1, theta=0.15)
    xs = np.array([noise.sample()[0] for _ in range(20_000)])
    lag1 = np.corrcoef(xs[:-1], xs[1:])[0, 1]
    assert lag1 == pytest.approx(0.85, abs=0.02)  # x ← (1 - θ) x + σ ε: correlation 1 - θ
    assert xs.std() == pytest.approx(0.2 / np.sqrt(1 - 0.85 ** 2), rel=0.05)  # its stationary std
    noise.reset()
    assert noise.state.tolist() == [0.0]
    gaussian = ddpg.GaussianNoise(0.2, 1)
    ys = np.array([gaussian.sample()[0] for _ in range(20_000)])
    assert abs(np.corrcoef(ys[:-1], ys[1:])[0, 1]) < 0.03


@pytest.mark.parametrize("env_id, terminated", [("user_envs:ContinuousCounter-v0", 0.0),
                                                ("user_envs:ContinuousIdentityRegistered-v0", 1.0)])
def test_the_buffer_gets_the_true_final_observation_and_only_a_termination(env_id, terminated):
    """ContinuousCounter's episodes end by the time limit (truncated after 5 steps, observing 5);
    ContinuousIdentity's by termination (after 20). Both store the final observation, not the reset's,
    and the termination flag only for the second."""
    envs = ddpg.make_vec_env(ddpg.resolve_env_id(env_id))
    agent = ddpg.Agent(envs.single_observation_space.shape[0], 1 if "Counter" in env_id else 2, twin_q=False)
    buffer = ddpg.ReplayBuffer(100, envs.single_observation_space.shape[0], envs.single_action_space.shape[0])
    obs, _ = envs.reset(seed=0)
    ends = []
    noise = ddpg.GaussianNoise(0.1, envs.single_action_space.shape[0])
    for t in range(20):
        obs = ddpg.env_step(envs, agent, obs, buffer, noise if t % 2 else None, torch.device("cpu"),
                            lambda env, ret, length: ends.append((t, length)))
    last = 4 if "Counter" in env_id else 19
    assert ends[0] == (last, last + 1)
    assert buffer.terminations[last] == terminated and buffer.terminations[:last].sum() == 0
    if "Counter" in env_id:
        assert buffer.next_obs[4].tolist() == [5.0] and buffer.obs[5].tolist() == [0.0]  # final obs, then the reset's
    assert np.abs(buffer.actions[:20]).max() <= 1.0


def test_actions_reach_the_env_rescaled_to_its_bounds():
    """The actor's [-1, 1] maps onto [low, high]: Pendulum's torque bound is 2."""
    envs = ddpg.make_vec_env("Pendulum-v1")
    obs, _ = envs.reset(seed=0)
    received = []
    original = envs.envs[0].step
    envs.envs[0].step = lambda action: received.append(np.array(action)) or original(action)
    buffer = ddpg.ReplayBuffer(10, 3, 1)
    np.random.seed(0)
    for _ in range(5):
        obs = ddpg.env_step(envs, None, obs, buffer, None, torch.device("cpu"), lambda *episode: None)
    np.testing.assert_allclose(np.concatenate(received), 2.0 * buffer.actions[:5, 0], rtol=1e-6)


# ------------------------------------------------------------------------------------- learning
@pytest.mark.learning
@pytest.mark.parametrize("seed", learning_seeds(1))
def test_learns_pendulum_within_a_small_budget(seed, runs_dir, record_learning):
    """10,000 steps with 64-unit networks; random actions score -1,256 ± 296 per episode.

    Seeds 1-10 on AMD EPYC (benchmark/learning_bounds.py, while other jobs shared the cores):
    evaluation min -170, median -122; training return of the last 20 episodes, which reach back
    to step 6,000, min -225, median -157. The evaluation's bound -300 (the issue's) lies 130
    below the worst; the training return's -400, 175 below it. Both are some 900 above random."""
    summary = ddpg.train(ddpg.Args(env_id="Pendulum-v1", seed=seed, total_timesteps=10_000, hidden_size=64,
                                   batch_size=128, runs_dir=runs_dir, eval_episodes=5))
    record_learning(seed, final_return=summary["final_return"], eval_return=summary["eval_return"])
    assert summary["eval_return"] >= -300, summary["eval_return"]
    assert summary["final_return"] >= -400, summary["final_return"]


@pytest.mark.learning
@pytest.mark.parametrize("seed", learning_seeds(1))
@pytest.mark.parametrize("td3", [False, True], ids=["ddpg", "td3"])
def test_learns_a_continuous_identity_env(seed, td3, runs_dir, record_learning):
    """Acting with 0 scores about -3.3 per episode; hitting the targets scores 0. Seeds 1-10 on AMD
    EPYC: DDPG min -0.047, median -0.024; TD3 min -0.056, median -0.024. The bound -0.5 is about
    nine times the worst."""
    corrections = dict(twin_q=True, policy_frequency=2, target_noise=0.2) if td3 else {}
    summary = ddpg.train(ddpg.Args(**IDENTITY, **corrections, total_timesteps=3000, seed=seed, runs_dir=runs_dir,
                                   eval_episodes=10))
    record_learning(seed, eval_return=summary["eval_return"])
    assert summary["eval_return"] > -0.5


# ---------------------------------------------------------------------- determinism and files
def test_same_seed_same_returns_other_seed_other_returns(tmp_path):
    def run(seed, name):
        args = ddpg.Args(**IDENTITY, noise="ou", seed=seed, total_timesteps=600, runs_dir=str(tmp_path / name),
                         eval_episodes=1)
        summary = ddpg.train(args)
        return summary, [value for _, value in read_scalars(summary["run_dir"], "charts/episodic_return")]
    (first, first_returns), (again, again_returns), (_, other_returns) = run(1, "a"), run(1, "b"), run(2, "c")
    assert len(first_returns) == 30 and first_returns == again_returns and first_returns != other_returns
    assert first["eval_return"] == again["eval_return"]
    saved = [torch.load(s["checkpoint"], weights_only=False)["agent"] for s in (first, again)]
    assert all(torch.equal(saved[0][key], saved[1][key]) for key in saved[0])


def test_a_run_leaves_what_the_conventions_say(runs_dir):
    summary = ddpg.train(ddpg.Args(**IDENTITY, total_timesteps=1000, runs_dir=runs_dir, eval_episodes=2))
    for key in ("algorithm", "env_id", "seed", "global_step", "wall_seconds", "sps", "final_return", "eval_return",
                "eval_return_std", "steps_to_threshold", "args"):
        assert key in summary
    assert summary["algorithm"] == "ddpg" and summary["global_step"] == 1000
    with open(os.path.join(summary["run_dir"], "summary.json")) as f:
        assert json.load(f)["global_step"] == 1000
    for tag in ("charts/episodic_return", "losses/value_loss", "losses/policy_loss", "losses/q_value", "charts/SPS"):
        assert read_scalars(summary["run_dir"], tag), tag
    checkpoint = torch.load(summary["checkpoint"], weights_only=False)
    assert checkpoint["buffer"] is None  # not by default
    assert {"actor_optimizer", "critic_optimizer"} <= set(checkpoint)
    assert any(key.startswith("actor_target.") for key in checkpoint["agent"])


def test_resume_with_the_saved_buffer_restores_it_exactly(runs_dir):
    first = ddpg.train(ddpg.Args(**IDENTITY, buffer_size=300, save_buffer=True, total_timesteps=500,
                                 runs_dir=runs_dir, eval_episodes=1))
    saved = torch.load(first["checkpoint"], weights_only=False)
    assert saved["buffer"]["size"] == 300 and saved["global_step"] == 500
    agent = ddpg.Agent(2, 2, False, 64)
    run = ddpg.Run(ddpg.Args(**IDENTITY, buffer_size=300, resume=first["checkpoint"], total_timesteps=600))
    buffer = ddpg.ReplayBuffer(300, 2, 2)
    run.start(ddpg.make_vec_env(run.env_id), agent, torch.optim.Adam(agent.actor.parameters()),
              torch.optim.Adam(agent.critics.parameters()), buffer)
    # the buffer as it stood: the last 300 transitions, oldest first from where the next one will go
    assert buffer.size == 300
    for key in ("obs", "actions", "rewards", "next_obs", "terminations"):
        np.testing.assert_array_equal(getattr(buffer, key)[np.roll(np.arange(300), -buffer.position)],
                                      saved["buffer"][key])
    resumed = ddpg.train(ddpg.Args(**IDENTITY, buffer_size=300, save_buffer=True, resume=first["checkpoint"],
                                   total_timesteps=600, eval_episodes=1))
    assert resumed["global_step"] == 600


def test_ctrl_c_saves_a_checkpoint_that_resume_continues(tmp_path):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    process = subprocess.Popen([sys.executable, os.path.join(ROOT, "ddpg.py"), "--hidden-size", "32"], cwd=tmp_path,
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout.readline().startswith("DDPG on Pendulum-v1")
    time.sleep(3.0)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "continue with --resume" in stdout
    (run_dir,) = os.listdir(tmp_path / "runs")
    checkpoint_path = tmp_path / "runs" / run_dir / "ddpg.pt"
    step = torch.load(checkpoint_path, weights_only=False)["global_step"]
    assert 0 < step < 20_000
    result = run_script("ddpg.py", "--resume", str(checkpoint_path), "--total-timesteps", str(step + 300),
                        "--learning-starts", "100", "--eval-episodes", "1", cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "replay buffer starts empty" in result.stdout  # no --save-buffer: refilled by the policy, then updates
    assert torch.load(checkpoint_path, weights_only=False)["global_step"] == step + 300
    result = run_script("ddpg.py", "--eval-checkpoint", str(checkpoint_path), "--eval-episodes", "1",
                        cwd=str(tmp_path))
    assert result.returncode == 0 and "deterministic" in result.stdout, result.stderr


def test_non_finite_rewards_stop_training_and_keep_the_last_finite_weights(tmp_path):
    result = run_script("ddpg.py", "--env-id", "user_envs:ContinuousNaNReward", "--total-timesteps", "3000",
                        "--learning-starts", "100", "--hidden-size", "32", cwd=str(tmp_path))
    assert result.returncode == 1
    assert "training stopped" in result.stderr and "Traceback" not in result.stderr
    (run_dir,) = os.listdir(tmp_path / "runs")
    summary = json.load(open(tmp_path / "runs" / run_dir / "summary.json"))
    assert summary["failed"] and summary["global_step"] < 3000
    checkpoint = torch.load(tmp_path / "runs" / run_dir / "ddpg.pt", weights_only=False)
    assert all(torch.isfinite(tensor).all() for tensor in checkpoint["agent"].values())


# ------------------------------------------------------------------------------------ bad input
BAD_INPUTS = {
    "discrete actions": (["--env-id", "CartPole-v1"], "use ppo.py or a2c.py"),
    "unbounded actions": (["--env-id", "user_envs:UnboundedActions"], "must be finite"),
    "matrix actions": (["--env-id", "user_envs:MultiDimensionalAction"], "flat Box"),
    "unknown env": (["--env-id", "Pendulum-v9"], "Pendulum"),
    "tau above one": (["--tau", "1.5"], "--tau must lie in [0, 1]"),
    "no policy updates": (["--policy-frequency", "0"], "--policy-frequency must be positive"),
    "negative noise": (["--exploration-noise", "-0.1"], "--exploration-noise must be a finite number ≥ 0"),
    "batch larger than the buffer": (["--buffer-size", "100", "--batch-size", "256"], "more than the replay buffer"),
    "learning starts beyond the buffer": (["--buffer-size", "500", "--batch-size", "64"], "--learning-starts 1000 is more"),
    "OU noise that never reverts": (["--ou-theta", "0"], "--ou-theta must lie strictly between 0 and 1"),
    "both resume and eval": (["--resume", "a.pt", "--eval-checkpoint", "b.pt"], "not both"),
    "missing checkpoint": (["--eval-checkpoint", "nowhere.pt"], "does not exist"),
}


@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_bad_input_gives_one_line_and_exit_status_2(case, tmp_path):
    flags, message = BAD_INPUTS[case]
    check_usage_error("ddpg.py", flags, message, tmp_path)


def test_resume_with_other_critics_is_refused(tmp_path):
    summary = ddpg.train(ddpg.Args(**IDENTITY, total_timesteps=300, runs_dir=str(tmp_path / "first"),
                                   eval_episodes=1))
    os.makedirs(tmp_path / "cli")
    check_usage_error("ddpg.py", ["--resume", summary["checkpoint"], "--twin-q", "--total-timesteps", "400"],
                      "--twin-q False", tmp_path / "cli")


def test_help_documents_every_flag():
    check_help("ddpg.py", ddpg.Args)


def test_the_users_own_env_class_trains_from_the_command_line(tmp_path):
    result = run_script("ddpg.py", "--env-id", "user_envs:ContinuousIdentity", "--total-timesteps", "300",
                        "--learning-starts", "100", "--hidden-size", "16", "--eval-episodes", "2", cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr
    (run_dir,) = os.listdir(tmp_path / "runs")
    summary = json.load(open(tmp_path / "runs" / run_dir / "summary.json"))
    assert summary["global_step"] == 300 and summary["eval_return"] is not None
