"""trpo.py: conjugate gradient, the Fisher-vector product, the trust-region step, learning, and
the conventions.

Its GAE is checked in test_gae.py, with those of the other scripts.
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
from torch.distributions import Categorical, Normal, kl_divergence

import trpo
from conftest import ROOT, check_help, check_usage_error, learning_seeds, read_scalars, run_script

SPACES = {"categorical": gym.spaces.Discrete(3), "gaussian": gym.spaces.Box(-1.0, 1.0, (2,))}


# ------------------------------------------------------------------------ conjugate gradient
@pytest.mark.parametrize("n", [5, 30])
def test_conjugate_gradient_solves_a_symmetric_positive_definite_system(n):
    # A = Q diag(λ) Qᵀ with a random rotation Q and eigenvalues λ in [0.5, 10]: symmetric positive
    # definite, conditioned like a damped Fisher matrix.
    generator = torch.Generator().manual_seed(n)
    q, _ = torch.linalg.qr(torch.randn(n, n, dtype=torch.float64, generator=generator))
    eigenvalues = 0.5 + 9.5 * torch.rand(n, dtype=torch.float64, generator=generator)
    a = q @ torch.diag(eigenvalues) @ q.T
    b = torch.randn(n, dtype=torch.float64, generator=generator)
    products = []
    x = trpo.conjugate_gradient(lambda v: products.append(v) or a @ v, b, iters=n, residual_tol=1e-20)
    expected = torch.linalg.solve(a, b)
    assert torch.allclose(x, expected, rtol=1e-8, atol=1e-10)
    # One product with A per iteration, at most n of them (fewer once the residual is below the
    # tolerance); A itself is never read.
    assert n - 2 <= len(products) <= n


def test_conjugate_gradient_gets_closer_with_each_iteration():
    # CG minimises the A-norm of the error over a growing subspace, so that norm never grows.
    generator = torch.Generator().manual_seed(0)
    m = torch.randn(40, 40, dtype=torch.float64, generator=generator)
    a = m @ m.T / 40 + torch.eye(40, dtype=torch.float64)
    b = torch.randn(40, dtype=torch.float64, generator=generator)
    solution = torch.linalg.solve(a, b)
    a_norm = lambda e: (e @ a @ e).sqrt().item()
    errors = [a_norm(trpo.conjugate_gradient(lambda v: a @ v, b, iters=k) - solution) for k in range(0, 12)]
    assert all(later < earlier for earlier, later in zip(errors, errors[1:]))
    assert errors[-1] < 1e-3 * errors[0]


# -------------------------------------------------------------------- Fisher-vector products
def tiny_agent(action_space, seed=0) -> trpo.Agent:
    """An agent with a 4-4 actor, in float64, so that its Fisher matrix can be formed whole."""
    torch.manual_seed(seed)
    agent = trpo.Agent(2, action_space)
    action_size = action_space.n if isinstance(action_space, gym.spaces.Discrete) else action_space.shape[0]
    agent.actor = trpo.mlp(2, action_size, out_std=1.0, hidden=4)
    if not agent.discrete:
        with torch.no_grad():
            agent.log_std.copy_(torch.tensor([-0.3, 0.4]))
    return agent.double()


def policy_from_flat(agent: trpo.Agent, theta: torch.Tensor, obs: torch.Tensor):
    """π_θ(·|s) written out by hand from a flat θ (the actor's three layers, then log σ), as a
    torch.distributions object: independent of the script's own KL and products."""
    shapes = [p.shape for p in agent.policy_parameters()]
    w1, b1, w2, b2, w3, b3, *log_std = [piece.view(shape) for piece, shape in
                                        zip(torch.split(theta, [s.numel() for s in shapes]), shapes)]
    out = torch.tanh(torch.tanh(obs @ w1.T + b1) @ w2.T + b2) @ w3.T + b3
    return Categorical(logits=out) if agent.discrete else Normal(out, log_std[0].exp())


def mean_kl_hessian(agent: trpo.Agent, obs: torch.Tensor) -> torch.Tensor:
    """∇²_θ mean_s KL(π_old(·|s) ‖ π_θ(·|s)) at θ = θ_old, formed whole by torch."""
    theta_old = torch.nn.utils.parameters_to_vector(agent.policy_parameters()).detach()
    old = policy_from_flat(agent, theta_old, obs)

    def mean_kl(theta):
        kl = kl_divergence(old, policy_from_flat(agent, theta, obs))
        return (kl if agent.discrete else kl.sum(-1)).mean()
    return torch.autograd.functional.hessian(mean_kl, theta_old)


def fisher_matrix(agent: trpo.Agent, obs: torch.Tensor) -> torch.Tensor:
    """mean_s E_{a~π(·|s)}[∇log π(a|s) ∇log π(a|s)ᵀ], formed whole: as a sum over the actions of a
    Categorical; for a Gaussian, Jμᵀ diag(1/σ²) Jμ for the mean's parameters and 2 for each log σ."""
    theta = torch.nn.utils.parameters_to_vector(agent.policy_parameters()).detach()
    size, fisher = len(theta), 0
    for state in obs:
        if agent.discrete:
            probs = policy_from_flat(agent, theta, state).probs
            jacobian = torch.autograd.functional.jacobian(
                lambda th: policy_from_flat(agent, th, state).logits, theta)  # rows: ∇log π(a|s)
            fisher = fisher + jacobian.T @ torch.diag(probs.detach()) @ jacobian
        else:
            normal = policy_from_flat(agent, theta, state)
            jacobian = torch.autograd.functional.jacobian(lambda th: policy_from_flat(agent, th, state).mean, theta)
            block = jacobian.T @ torch.diag(1 / normal.variance.detach()) @ jacobian
            block[-2:, -2:] += 2 * torch.eye(2, dtype=theta.dtype)  # the last two entries of θ are log σ
            fisher = fisher + block
    assert fisher.shape == (size, size)
    return fisher / len(obs)


@pytest.mark.parametrize("kind", SPACES)
def test_the_fisher_vector_product_is_the_hessian_of_the_mean_kl_and_the_fisher_matrix_times_v(kind):
    agent = tiny_agent(SPACES[kind])
    obs = torch.randn(6, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    old = tuple(x.detach() for x in agent.distribution(obs)) if not agent.discrete else agent.distribution(obs).detach()
    product = trpo.fisher_vector_product(agent, obs, old, damping=0.1)
    hessian, fisher = mean_kl_hessian(agent, obs), fisher_matrix(agent, obs)
    assert torch.allclose(hessian, fisher, atol=1e-10)  # the identity the method rests on
    for seed in range(3):
        v = torch.randn(len(hessian), dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
        assert torch.allclose(product(v), hessian @ v + 0.1 * v, rtol=1e-8, atol=1e-10)


# ------------------------------------------------------------------------ the trust-region step
def random_batch(agent: trpo.Agent, size=256, seed=0):
    generator = torch.Generator().manual_seed(seed)
    obs = torch.randn(size, 2, dtype=torch.float64, generator=generator)
    with torch.no_grad():
        torch.manual_seed(seed)
        actions = agent.sample_action(obs)
    # Advantages that favour some actions in some states: a direction worth stepping in.
    advantages = (actions.double() - 1.0 if agent.discrete else actions[:, 0] - obs[:, 0]) * obs[:, 1]
    return obs, actions, (advantages - advantages.mean()) / advantages.std()


def measured_kl_and_surrogate(agent, theta, obs, actions, advantages, old):
    """Mean KL(π_old ‖ π_θ) and the surrogate mean(ratio · Â), from torch.distributions."""
    new = policy_from_flat(agent, theta, obs)
    kl = kl_divergence(old, new)
    log_ratio = new.log_prob(actions) - old.log_prob(actions)
    if not agent.discrete:
        kl, log_ratio = kl.sum(-1), log_ratio.sum(-1)
    return kl.mean().item(), (log_ratio.exp() * advantages).mean().item()


@pytest.mark.parametrize("kind", SPACES)
@pytest.mark.parametrize("max_kl", [0.01, 0.05])
def test_an_accepted_step_stays_within_the_trust_region_and_improves_the_surrogate(kind, max_kl):
    agent = tiny_agent(SPACES[kind])
    obs, actions, advantages = random_batch(agent)
    params = agent.policy_parameters()
    theta_old = torch.nn.utils.parameters_to_vector(params).detach().clone()
    old = policy_from_flat(agent, theta_old, obs)
    _, surrogate_before = measured_kl_and_surrogate(agent, theta_old, obs, actions, advantages, old)
    diagnostics = trpo.trpo_step(agent, obs, actions, advantages, trpo.Args(max_kl=max_kl))
    theta = torch.nn.utils.parameters_to_vector(params).detach()
    kl, surrogate_after = measured_kl_and_surrogate(agent, theta, obs, actions, advantages, old)
    assert diagnostics["step_accepted"] == 1.0 and not torch.equal(theta, theta_old)
    assert 0 < kl <= max_kl * (1 + 1e-6)
    assert kl > max_kl / 10  # a real step, not a timid one: the full step aims at the edge, KL = δ
    assert surrogate_after > surrogate_before
    assert diagnostics["kl_after_step"] == pytest.approx(kl, rel=1e-6)
    assert diagnostics["surrogate_improvement"] == pytest.approx(surrogate_after - surrogate_before, rel=1e-6)


@pytest.mark.parametrize("kind", SPACES)
def test_without_line_search_the_step_is_the_full_natural_gradient_step(kind):
    # Δ = √(2δ / xᵀFx) x puts the step on the edge of the quadratic model: ½ Δᵀ(F + c_damp I)Δ = δ,
    # and along the natural gradient: (F + c_damp I)Δ ∝ g, up to the conjugate gradient's accuracy.
    agent = tiny_agent(SPACES[kind])
    obs, actions, advantages = random_batch(agent)
    params = agent.policy_parameters()
    theta_old = torch.nn.utils.parameters_to_vector(params).detach().clone()
    old = agent.distribution(obs)
    old = old.detach() if agent.discrete else tuple(x.detach() for x in old)
    product = trpo.fisher_vector_product(agent, obs, old, damping=0.1)
    old_logprobs = agent.logprob_entropy(obs, actions)[0].detach()
    g = trpo.flat_grad(trpo.surrogate(agent.logprob_entropy(obs, actions)[0], old_logprobs, advantages), params)
    args = trpo.Args(line_search=False, max_kl=0.02, cg_iters=len(theta_old), cg_damping=0.1)
    diagnostics = trpo.trpo_step(agent, obs, actions, advantages, args)
    step = torch.nn.utils.parameters_to_vector(params).detach() - theta_old
    assert diagnostics["line_search_steps"] == 1 and diagnostics["step_accepted"] == 1.0
    assert (0.5 * step @ product(step)).item() == pytest.approx(0.02, rel=1e-6)
    f_step = product(step)
    assert torch.allclose(f_step / f_step.norm(), g / g.norm(), atol=1e-5)


def test_the_line_search_shrinks_a_step_that_leaves_the_trust_region():
    # Without damping, this Gaussian's full step overshoots: the quadratic model underestimates
    # the KL (measured: 1.25 δ). The line search must shrink it back inside.
    args = trpo.Args(max_kl=0.01, cg_damping=0.0)
    full = tiny_agent(SPACES["gaussian"])
    obs, actions, advantages = random_batch(full)
    unchecked = trpo.trpo_step(full, obs, actions, advantages, trpo.Args(max_kl=0.01, cg_damping=0.0,
                                                                         line_search=False))
    assert unchecked["kl_after_step"] > 0.01 * 1.1
    agent = tiny_agent(SPACES["gaussian"])
    theta_old = torch.nn.utils.parameters_to_vector(agent.policy_parameters()).detach().clone()
    old = policy_from_flat(agent, theta_old, obs)
    diagnostics = trpo.trpo_step(agent, obs, actions, advantages, args)
    kl, _ = measured_kl_and_surrogate(agent, torch.nn.utils.parameters_to_vector(agent.policy_parameters()).detach(),
                                      obs, actions, advantages, old)
    # The full step (candidate 1) left the region; candidate 2, shrunk by 0.8, is the first that fits.
    assert diagnostics["step_accepted"] == 1.0 and diagnostics["line_search_steps"] == 2
    assert kl <= 0.01 and diagnostics["kl_after_step"] == pytest.approx(kl, rel=1e-6)


def test_when_no_step_is_acceptable_the_parameters_are_exactly_unchanged(monkeypatch):
    agent = tiny_agent(SPACES["gaussian"])
    obs, actions, advantages = random_batch(agent)
    state = {name: tensor.clone() for name, tensor in agent.state_dict().items()}
    surrogate = trpo.surrogate
    calls = []

    def worse_everywhere(*args):  # the surrogate at θ_old as it is; every candidate step scores lower
        calls.append(None)
        value = surrogate(*args)
        return value if len(calls) == 1 else value - 1.0
    monkeypatch.setattr(trpo, "surrogate", worse_everywhere)
    diagnostics = trpo.trpo_step(agent, obs, actions, advantages, trpo.Args(backtrack_iters=7))
    assert diagnostics["step_accepted"] == 0.0 and diagnostics["line_search_steps"] == 7
    assert len(calls) == 1 + 7
    assert all(torch.equal(tensor, state[name]) for name, tensor in agent.state_dict().items())


def test_a_step_outside_the_trust_region_is_refused_however_much_it_improves():
    agent = tiny_agent(SPACES["categorical"])
    obs, actions, advantages = random_batch(agent)
    state = {name: tensor.clone() for name, tensor in agent.state_dict().items()}
    kl_from = agent.kl_from
    calls = []

    def kl_too_large(*args):  # the true KL for the Fisher-vector products; 2δ more for every candidate
        calls.append(None)
        return kl_from(*args) + (0.0 if len(calls) == 1 else 0.02)
    agent.kl_from = kl_too_large
    diagnostics = trpo.trpo_step(agent, obs, actions, advantages, trpo.Args(max_kl=0.01, backtrack_iters=5))
    assert diagnostics["step_accepted"] == 0.0 and diagnostics["line_search_steps"] == 5
    assert all(torch.equal(tensor, state[name]) for name, tensor in agent.state_dict().items())


@pytest.mark.parametrize("case", ["all advantages equal", "non-finite observation"])
def test_no_direction_to_step_in_leaves_the_policy_unchanged(case):
    agent = tiny_agent(SPACES["categorical"])
    obs, actions, advantages = random_batch(agent, size=8)
    if case == "all advantages equal":  # as a batch of one transition gives, once normalised
        advantages = torch.zeros_like(advantages)
    else:
        obs[3, 0] = float("nan")
    state = {name: tensor.clone() for name, tensor in agent.state_dict().items()}
    diagnostics = trpo.trpo_step(agent, obs, actions, advantages, trpo.Args())
    assert diagnostics["step_accepted"] == 0.0 and diagnostics["line_search_steps"] == 0
    assert all(torch.equal(tensor, state[name]) for name, tensor in agent.state_dict().items())


@pytest.mark.learning
@pytest.mark.parametrize("seed", learning_seeds(0))
def test_the_update_fits_the_critic_and_leaves_it_out_of_the_policy_step(seed, record_learning):
    """Seeds 1-20 on AMD EPYC, 1-10 on Intel Xeon, and its own 0: after the fit the loss was
    0.125-0.127, its least being 0.125 (bound: 0.15, from 0.25 before the fit)."""
    torch.manual_seed(seed)
    agent = trpo.Agent(1, gym.spaces.Discrete(2))
    with torch.no_grad():  # V(s) = 0 to start with, whatever the seed: far from the mean return 0.5
        agent.critic[-1].weight.zero_()
        agent.critic[-1].bias.zero_()
    rollout = {"obs": torch.ones(8, 2, 1), "next_obs": torch.ones(8, 2, 1),
               "actions": torch.tensor([[0, 1]] * 8), "rewards": torch.tensor([[1.0, 0.0]] * 8),
               "terminations": torch.ones(8, 2), "truncations": torch.zeros(8, 2)}
    assert not {id(p) for p in agent.policy_parameters()} & {id(p) for p in agent.critic.parameters()}
    critic_before = [p.clone() for p in agent.critic.parameters()]
    flat = lambda x: x.reshape(-1, *x.shape[2:])
    trpo.trpo_step(agent, flat(rollout["obs"]), flat(rollout["actions"]), torch.tensor([1.0, -1.0] * 8), trpo.Args())
    assert all(torch.equal(a, b) for a, b in zip(critic_before, agent.critic.parameters()))  # the step moves π only
    probability = lambda: torch.softmax(agent.actor(torch.ones(1)), -1)[0].item()
    before = probability()
    optimizer = torch.optim.Adam(agent.critic.parameters(), lr=1e-2)
    args = trpo.Args(critic_epochs=50, num_minibatches=4)
    first = trpo.trpo_update(agent, optimizer, trpo.make_batch(agent, rollout, args), args)
    assert first["step_accepted"] == 1.0 and probability() > before  # arm 0 pays 1, arm 1 pays 0
    assert not all(torch.equal(a, b) for a, b in zip(critic_before, agent.critic.parameters()))
    assert first["value_loss"] == pytest.approx(0.25)  # ½ E[(0 - R̂)²] with R̂ = r ∈ {0, 1}: before the fit
    args = trpo.Args(critic_epochs=1)
    second = trpo.trpo_update(agent, optimizer, trpo.make_batch(agent, rollout, args), args)
    record_learning(seed, value_after_fit=agent.value(torch.ones(1)).item(), second_value_loss=second["value_loss"])
    # After the fit V(s) is near the mean return 0.5, where the loss is 0.125, its least.
    assert second["value_loss"] < 0.15, second["value_loss"]


def test_a_rollout_of_one_transition_leaves_the_policy_alone_and_fits_the_critic():
    # One normalised advantage is 0: no gradient, so no step, and no error.
    torch.manual_seed(0)
    agent = trpo.Agent(1, gym.spaces.Box(-1.0, 1.0, (1,)))
    rollout = {"obs": torch.ones(1, 1, 1), "next_obs": torch.ones(1, 1, 1), "actions": torch.full((1, 1, 1), 0.3),
               "rewards": torch.tensor([[2.0]]), "terminations": torch.ones(1, 1), "truncations": torch.zeros(1, 1)}
    policy_before = [p.clone() for p in agent.policy_parameters()]
    optimizer = torch.optim.Adam(agent.critic.parameters(), lr=1e-2)
    args = trpo.Args(num_minibatches=1)
    diagnostics = trpo.trpo_update(agent, optimizer, trpo.make_batch(agent, rollout, args), args)
    assert diagnostics["step_accepted"] == 0.0 and diagnostics["line_search_steps"] == 0
    assert all(torch.equal(a, b) for a, b in zip(policy_before, agent.policy_parameters()))
    assert abs(agent.value(torch.ones(1)).item() - 2.0) < abs(diagnostics["value_loss"] * 2) ** 0.5  # V moved toward 2


# ----------------------------------------------------------------------------------- learning
@pytest.mark.learning
@pytest.mark.parametrize("seed", learning_seeds(1))
def test_learns_cartpole_within_a_small_budget(seed, runs_dir, record_learning):
    """20k steps of the defaults: the last 20 episodes average at least 100 (a random policy: 23);
    no accepted step ever left the trust region.

    Seeds 1-20 on AMD EPYC: min 204, median 341; seeds 1-10 on Intel Xeon: min 253, median 356.
    The bound is half the worst seed's return."""
    summary = trpo.train(trpo.Args(seed=seed, total_timesteps=20_000, runs_dir=runs_dir, save_model=False,
                                   eval_episodes=3))
    record_learning(seed, final_return=summary["final_return"], largest_kl_after_step=summary["largest_kl_after_step"])
    assert summary["final_return"] >= 100, summary["final_return"]
    assert 0 < summary["largest_kl_after_step"] <= 0.01 * (1 + 1e-6)


@pytest.mark.learning
@pytest.mark.parametrize("seed", learning_seeds(1))
def test_learns_a_continuous_toy_env(seed, runs_dir, record_learning):
    """Acting with the mean 0 scores about -3.3 per episode; hitting the targets scores 0.

    Seeds 1-20 on AMD EPYC: min -0.0026, median -0.0013; seeds 1-10 on Intel Xeon: min -0.0021,
    median -0.0013. The bound -0.1 is 38 times the worst."""
    args = trpo.Args(env_id="user_envs:ContinuousIdentityRegistered-v0", gamma=0.0, num_steps=128, max_kl=0.05,
                     total_timesteps=12_000, seed=seed, runs_dir=runs_dir, save_model=False)
    summary = trpo.train(args)
    record_learning(seed, eval_return=summary["eval_return"])
    assert summary["eval_return"] > -0.1, summary["eval_return"]


# ---------------------------------------------------------------------- determinism and files
def test_same_seed_same_returns_other_seed_other_returns(tmp_path):
    def run(seed, name):
        summary = trpo.train(trpo.Args(seed=seed, num_steps=128, total_timesteps=4096,
                                       runs_dir=str(tmp_path / name), eval_episodes=1))
        return summary, [value for _, value in read_scalars(summary["run_dir"], "charts/episodic_return")]
    (first, first_returns), (again, again_returns), (_, other_returns) = run(1, "a"), run(1, "b"), run(2, "c")
    assert len(first_returns) > 30
    assert first_returns == again_returns and first_returns != other_returns
    checkpoints = [torch.load(s["checkpoint"], weights_only=False) for s in (first, again)]
    assert all(torch.equal(a, b) for a, b in zip(checkpoints[0]["agent"].values(), checkpoints[1]["agent"].values()))


def test_run_leaves_the_conventional_files_and_tags(runs_dir):
    # Updates of 1,024 steps: each one's losses are logged (they are once in 500 steps or more).
    summary = trpo.train(trpo.Args(total_timesteps=2048, num_steps=256, runs_dir=runs_dir, eval_episodes=2))
    files = os.listdir(summary["run_dir"])
    assert "trpo.pt" in files and "summary.json" in files
    on_disk = json.load(open(os.path.join(summary["run_dir"], "summary.json")))
    for key in ("algorithm", "env_id", "seed", "global_step", "wall_seconds", "sps", "final_return",
                "eval_return", "eval_return_std", "steps_to_threshold", "largest_kl_after_step", "args"):
        assert key in on_disk
    assert on_disk["global_step"] == 2048 and on_disk["algorithm"] == "trpo"
    for tag in ("charts/episodic_return", "charts/episodic_length", "charts/learning_rate", "charts/SPS",
                "losses/policy_loss", "losses/value_loss", "losses/entropy", "losses/approx_kl",
                "losses/explained_variance", "losses/kl_after_step", "losses/line_search_steps",
                "losses/step_accepted", "eval/episodic_return"):
        assert read_scalars(summary["run_dir"], tag), tag
    kl = [value for _, value in read_scalars(summary["run_dir"], "losses/kl_after_step")]
    assert len(kl) == 2
    assert max(kl) == pytest.approx(on_disk["largest_kl_after_step"]) and max(kl) <= 0.01 * (1 + 1e-6)


def test_eval_checkpoint_and_resume_carry_the_normalisation_statistics(runs_dir, tmp_path):
    # MuJoCo's observations are float64: the networks must get them as float32 all the same.
    summary = trpo.train(trpo.Args(env_id="InvertedPendulum-v5", norm_obs=True, norm_reward=True, num_envs=2,
                                   num_steps=100,
                                   total_timesteps=1000, runs_dir=runs_dir, eval_episodes=2))
    result = run_script("trpo.py", "--eval-checkpoint", summary["checkpoint"], "--eval-episodes", "2",
                        cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert f"eval: mean return {summary['eval_return']:.1f} ± {summary['eval_return_std']:.1f}" in result.stdout
    saved = torch.load(summary["checkpoint"], weights_only=False)
    assert saved["action_space"] == "Box(1,)" and saved["obs_rms"].count >= 1000
    result = run_script("trpo.py", "--resume", summary["checkpoint"], "--total-timesteps", "1800",
                        "--learning-rate", "1e-4", "--eval-episodes", "1", cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr
    resumed = torch.load(summary["checkpoint"], weights_only=False)
    assert resumed["optimizer"]["param_groups"][0]["lr"] == 1e-4  # a flag given now overrides the saved one
    # Whole rollouts of 2 envs x 100 steps: 5 of them (1000 steps), then 4 more.
    assert (saved["global_step"], resumed["global_step"]) == (1000, 1800) and resumed["args"]["num_steps"] == 100
    # Each new step added one observation and one return to the saved statistics.
    assert resumed["obs_rms"].count >= saved["obs_rms"].count + 800
    assert resumed["return_rms"].count == pytest.approx(saved["return_rms"].count + 800)


def test_ctrl_c_saves_a_checkpoint_that_resume_continues(tmp_path):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    process = subprocess.Popen([sys.executable, os.path.join(ROOT, "trpo.py")], cwd=tmp_path, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout.readline().startswith("TRPO on CartPole-v1")
    time.sleep(2.0)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "continue with --resume" in stdout
    (run_dir,) = os.listdir(tmp_path / "runs")
    checkpoint_path = tmp_path / "runs" / run_dir / "trpo.pt"
    step = torch.load(checkpoint_path, weights_only=False)["global_step"]
    assert 0 < step < 100_000 and step % 512 == 0
    result = run_script("trpo.py", "--resume", str(checkpoint_path), "--total-timesteps", str(step + 2048),
                        "--eval-episodes", "1", cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert torch.load(checkpoint_path, weights_only=False)["global_step"] == step + 2048


@pytest.mark.parametrize("env_id", ["user_envs:NaNReward", "user_envs:ContinuousNaNReward"])
def test_non_finite_rewards_stop_training_and_keep_the_last_finite_weights(env_id, tmp_path):
    result = run_script("trpo.py", "--env-id", env_id, "--num-steps", "128", "--total-timesteps", "20000",
                        cwd=str(tmp_path))
    assert result.returncode == 1
    assert "training stopped" in result.stderr and "Traceback" not in result.stderr
    (run_dir,) = os.listdir(tmp_path / "runs")
    summary = json.load(open(tmp_path / "runs" / run_dir / "summary.json"))
    assert summary["failed"] and summary["global_step"] < 20000
    checkpoint = torch.load(tmp_path / "runs" / run_dir / "trpo.pt", weights_only=False)
    assert all(torch.isfinite(tensor).all() for tensor in checkpoint["agent"].values())


@pytest.mark.learning
@pytest.mark.parametrize("seed", learning_seeds(1))
def test_actions_numbered_from_a_start_other_than_zero(seed, runs_dir, record_learning):
    """ShiftedActions raises on an action outside 1 .. 4; above chance (5 of 20 steps), the shifted
    actions mean what they say.

    Seeds 1-20 on AMD EPYC and 1-10 on Intel Xeon: 20 of 20 on every seed; the bound is chance
    itself."""
    summary = trpo.train(trpo.Args(env_id="user_envs:ShiftedActions", num_steps=128, total_timesteps=4096, seed=seed,
                                   runs_dir=runs_dir, eval_episodes=2))
    record_learning(seed, eval_return=summary["eval_return"])
    assert torch.load(summary["checkpoint"], weights_only=False)["action_space"] == "Discrete(4, start=1)"
    assert summary["eval_return"] > 5


def test_users_own_env_class_trains_from_the_command_line(tmp_path):
    result = run_script("trpo.py", "--env-id", "user_envs:Identity", "--num-steps", "100", "--total-timesteps", "400",
                        "--no-line-search", "--eval-episodes", "2", cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr
    (run_dir,) = os.listdir(tmp_path / "runs")
    summary = json.load(open(tmp_path / "runs" / run_dir / "summary.json"))
    assert summary["global_step"] == 400 and summary["eval_return"] is not None
    assert summary["args"]["line_search"] is False


# --------------------------------------------------------------------------------- bad input
@pytest.fixture(scope="module")
def cartpole_checkpoint(tmp_path_factory):
    runs = str(tmp_path_factory.mktemp("runs"))
    args = trpo.Args(num_envs=2, num_steps=200, total_timesteps=400, runs_dir=runs, eval_episodes=1)
    return trpo.train(args)["checkpoint"]


BAD_INPUTS = {
    "image observations": (["--env-id", "user_envs:ImageObservation"], "flat Box"),
    "matrix actions": (["--env-id", "user_envs:MultiDimensionalAction"], "flat Box"),
    "unknown env, with a suggestion": (["--env-id", "CartPole-v9"], "CartPole"),
    "module that does not import": (["--env-id", "no_such_module:Env-v0"], "cannot import"),
    "empty rollout": (["--num-steps", "0"], "--num-steps must be positive"),
    "no conjugate gradient iterations": (["--cg-iters", "0"], "--cg-iters must be positive"),
    "trust region not positive": (["--max-kl", "0"], "--max-kl must be a positive finite"),
    "trust region not a number": (["--max-kl", "nan"], "--max-kl must be a positive finite"),
    "negative damping": (["--cg-damping", "-1"], "--cg-damping must be a finite number ≥ 0"),
    "backtracking that grows the step": (["--backtrack-coef", "1.5"], "--backtrack-coef must lie strictly"),
    "lambda above one": (["--gae-lambda", "1.5"], "--gae-lambda must lie in [0, 1]"),
    "more minibatches than transitions": (["--num-envs", "1", "--num-steps", "2", "--num-minibatches", "4"],
                                          "cannot be split into --num-minibatches 4"),
    "both resume and eval": (["--resume", "a.pt", "--eval-checkpoint", "b.pt"], "not both"),
    "missing checkpoint": (["--eval-checkpoint", "nowhere.pt"], "does not exist"),
    "checkpoint of another env": (["--env-id", "Acrobot-v1", "--eval-checkpoint", "{checkpoint}"],
                                  "pass --env-id CartPole-v1"),
    "resume with other normalisation": (["--resume", "{checkpoint}", "--norm-obs", "--total-timesteps", "800"],
                                        "--norm-obs False"),
    "resume a finished run": (["--resume", "{checkpoint}"], "already at step 400"),
}


@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_bad_input_gives_one_line_and_exit_status_2(case, tmp_path, cartpole_checkpoint):
    flags, message = BAD_INPUTS[case]
    flags = [flag.format(checkpoint=cartpole_checkpoint) for flag in flags]
    check_usage_error("trpo.py", flags, message, tmp_path)


def test_help_documents_every_flag():
    check_help("trpo.py", trpo.Args)
