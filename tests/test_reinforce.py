"""reinforce.py and reinforce_baseline.py: the estimator's math on an MDP solved exactly, the
baseline and its bootstrap, batches of complete episodes, learning, and the conventions.

What the two scripts share line for line is tested on both (parametrised by `module`); the
baseline's own parts through reinforce_baseline.py's functions.
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

import reinforce as rf
import reinforce_baseline as rb
from conftest import ROOT, check_help, check_usage_error, learning_seeds, read_scalars, run_script
from user_envs import ContinuousIdentity, TwoStepChain

CPU = torch.device("cpu")
BOTH = pytest.mark.parametrize("module", [rf, rb], ids=["reinforce", "reinforce_baseline"])


def script(module) -> str:
    return module.ALGORITHM + ".py"


def vector_env(env_fn, num_envs: int = 1, seed: int = 0) -> gym.vector.SyncVectorEnv:
    envs = gym.vector.SyncVectorEnv([env_fn] * num_envs, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    envs.reset(seed=seed)
    return envs


def concatenated(episodes: list[dict], key: str) -> torch.Tensor:
    return torch.from_numpy(np.concatenate([episode[key] for episode in episodes]))


def ignore(*episode) -> None:
    """An episode_ended callback for the tests that do not look at what the rollout reports."""


# ------------------------------------------------------------------------------ returns, weights
def test_rewards_to_go_by_hand():
    rewards = np.array([1.0, 2.0, 3.0])
    np.testing.assert_allclose(rf.rewards_to_go(rewards, 1.0), [6.0, 5.0, 3.0])
    np.testing.assert_allclose(rf.rewards_to_go(rewards, 0.5), [1 + 0.5 * 2 + 0.25 * 3, 2 + 0.5 * 3, 3.0])
    np.testing.assert_allclose(rf.rewards_to_go(rewards, 0.0), rewards)


def test_a_truncated_tail_is_bootstrapped_from_the_value_of_the_last_state():
    rewards = np.array([1.0, 2.0])
    # The time limit cut the episode after two rewards; V(s_2) = 10 stands for what would have followed.
    np.testing.assert_allclose(rb.rewards_to_go(rewards, 0.9, last_value=10.0), [1 + 0.9 * (2 + 0.9 * 10), 2 + 9])
    np.testing.assert_allclose(rb.rewards_to_go(rewards, 1.0, last_value=10.0), [13.0, 12.0])
    np.testing.assert_allclose(rb.rewards_to_go(rewards, 1.0), [3.0, 2.0])  # terminated: nothing follows


def test_weights_are_reward_to_go_or_the_whole_return_and_the_baseline_subtracts_values():
    episodes = [{"rewards": np.array([1.0, 4.0])}, {"rewards": np.array([4.0])}]
    np.testing.assert_allclose(rf.compute_weights(episodes, 0.5, True, False), [3.0, 4.0, 4.0])
    np.testing.assert_allclose(rf.compute_weights(episodes, 0.5, False, False), [3.0, 3.0, 4.0])
    np.testing.assert_allclose(rf.compute_weights(episodes, 1.0, False, False), [5.0, 5.0, 4.0])
    normalised = rf.compute_weights(episodes, 1.0, True, True)
    assert normalised.mean() == pytest.approx(0.0, abs=1e-9) and normalised.std() == pytest.approx(1.0)
    values = np.array([0.5, 1.0, 2.0])
    weights, returns = rb.compute_weights(episodes, values, [7.0, 0.0], 1.0, True, False)
    np.testing.assert_allclose(returns, [12.0, 11.0, 4.0])  # the first episode was truncated: G_T = 7
    np.testing.assert_allclose(weights, [11.5, 10.0, 2.0])  # G_t - V(s_t)
    weights, _ = rb.compute_weights(episodes, values, [7.0, 0.0], 1.0, False, False)
    np.testing.assert_allclose(weights, [11.5, 11.0, 2.0])  # R(τ) - V(s_t)


# -------------------------------------------------- the estimator on an MDP solved exactly
def tabular_policy(module) -> rf.Policy:
    """The script's own Policy, its network swapped for a table of logits: one column per one-hot state."""
    policy = module.Policy(3, gym.spaces.Discrete(2))
    policy.actor = nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        policy.actor.weight.copy_(torch.tensor([[0.3, -0.2, 0.5], [-0.1, 0.4, -0.6]]))
    return policy


def exact_return_and_values(policy):
    """J(θ) of TwoStepChain (γ = 1), computed over every trajectory, and V(s) of its three states."""
    probs = torch.softmax(policy.actor.weight.T, dim=-1)  # probs[s, a] = π(a|s)
    second = {s: sum(probs[s, b] * TwoStepChain.SECOND_REWARDS[s][b] for b in (0, 1)) for s in (1, 2)}
    J = sum(probs[0, a] * (TwoStepChain.FIRST_REWARDS[a] + second[1 + a]) for a in (0, 1))
    return J, torch.stack([J, second[1], second[2]]).detach()


# The tests of the estimator share one set of samples per seed (a module-scoped parameter).
SAMPLES_SEEDS = pytest.mark.parametrize("seed", learning_seeds(0), scope="module")


@pytest.fixture(scope="module")
def gradient_samples(seed):
    """The estimates ĝ of many independent batches of 10 episodes, each weighted four ways."""
    torch.manual_seed(seed)
    policy = tabular_policy(rf)
    J, values = exact_return_and_values(policy)
    (exact,) = torch.autograd.grad(J, policy.actor.weight)
    envs = vector_env(TwoStepChain, seed=seed)
    samples = {"whole return": [], "reward-to-go": [], "zero baseline": [], "V baseline": []}
    for _ in range(1000):
        episodes = rf.collect_batch(envs, policy, 20, CPU, ignore)
        obs, actions = concatenated(episodes, "obs"), concatenated(episodes, "actions")
        state_values = values[obs.argmax(-1)].numpy()
        weights = {
            "whole return": rf.compute_weights(episodes, 1.0, False, False),
            "reward-to-go": rf.compute_weights(episodes, 1.0, True, False),
            "zero baseline": rb.compute_weights(episodes, np.zeros(len(obs)), [0.0] * len(episodes), 1.0, True,
                                                False)[0],
            "V baseline": rb.compute_weights(episodes, state_values, [0.0] * len(episodes), 1.0, True, False)[0],
        }
        for name, w in weights.items():
            module = rf if name in ("whole return", "reward-to-go") else rb
            logprobs, _ = policy.logprob_entropy(obs, actions)
            loss = module.policy_loss(logprobs, torch.as_tensor(w, dtype=torch.float32), len(episodes))
            (gradient,) = torch.autograd.grad(loss, policy.actor.weight)
            samples[name].append(-gradient.flatten())  # ĝ = -∇L
    return exact.flatten(), {name: torch.stack(g) for name, g in samples.items()}


@pytest.mark.learning
@SAMPLES_SEEDS
@pytest.mark.parametrize("weighting", ["whole return", "reward-to-go", "V baseline"])
def test_the_mean_estimate_is_the_exact_gradient(seed, gradient_samples, weighting, record_learning):
    """Each component of the mean of 1,000 estimates lies within 4 standard errors of ∇J.

    Statistical: a component beyond 4 standard errors has a chance of 6e-5. Seeds 1-20 on AMD EPYC
    and 1-10 on Intel Xeon, each weighting: the largest error of any component was 2.7 standard
    errors on both."""
    exact, samples = gradient_samples
    g = samples[weighting]
    standard_error = g.std(dim=0) / len(g) ** 0.5
    record_learning(seed, largest_error_in_standard_errors=((g.mean(dim=0) - exact).abs() / standard_error).max())
    assert exact.abs().min() > 0.05  # every component of ∇J is far from 0, so "equal" is a real check
    assert ((g.mean(dim=0) - exact).abs() < 4 * standard_error).all(), (g.mean(dim=0), exact, standard_error)


@pytest.mark.learning
@SAMPLES_SEEDS
def test_reward_to_go_has_lower_variance_than_the_whole_return(seed, gradient_samples, record_learning):
    """Seeds 1-20 on AMD EPYC: the ratio of the variances was 0.65-0.69 (median 0.67); seeds 1-10
    on Intel Xeon: 0.65-0.68 (median 0.67). The bound is 0.8."""
    _, samples = gradient_samples
    whole, to_go = (samples[name].var(dim=0).sum() for name in ("whole return", "reward-to-go"))
    record_learning(seed, variance_ratio=to_go / whole)
    assert to_go < 0.8 * whole, (to_go, whole)


@pytest.mark.learning
@SAMPLES_SEEDS
def test_a_state_value_baseline_lowers_the_variance_and_a_zero_one_changes_nothing(seed, gradient_samples,
                                                                                   record_learning):
    """Seeds 1-20 on AMD EPYC: the ratio of the variances was 0.066-0.083 (12-15 times lower);
    seeds 1-10 on Intel Xeon: 0.066-0.082. The bound is 0.5."""
    _, samples = gradient_samples
    assert torch.equal(samples["zero baseline"], samples["reward-to-go"])
    plain, baseline = (samples[name].var(dim=0).sum() for name in ("reward-to-go", "V baseline"))
    record_learning(seed, variance_ratio=baseline / plain)
    print(f"variance of ĝ, summed over components: reward-to-go {plain:.3f}, with V(s) baseline "
          f"{baseline:.3f}: {plain / baseline:.1f}x lower")
    assert baseline < 0.5 * plain, (baseline, plain)


@pytest.mark.learning
@pytest.mark.parametrize("seed", learning_seeds(0))
def test_the_regression_steps_fit_the_baseline_to_the_returns(seed, record_learning):
    """Seeds 1-20 on AMD EPYC, and its own 0: the fitted V(s) was at most 0.063 from the exact
    values (bound: 0.15); the explained variance before the fit at most 0.24 (bound: 0.5). Seeds
    1-10 on Intel Xeon: at most 0.061 and 0.16."""
    torch.manual_seed(seed)
    policy = tabular_policy(rb)
    _, values = exact_return_and_values(policy)
    baseline = rb.mlp(3, 1, out_std=1.0)
    optimizer = torch.optim.Adam(policy.parameters(), lr=1e-8)  # the policy all but stands still
    baseline_optimizer = torch.optim.Adam(baseline.parameters(), lr=1e-2)
    episodes = rb.collect_batch(vector_env(TwoStepChain, seed=seed), policy, 4000, CPU, ignore)
    args = rb.Args(gamma=1.0, vf_iters=300)
    batch = rb.make_batch(baseline, episodes, args, CPU)
    rb.reinforce_update(policy, baseline, optimizer, baseline_optimizer, batch, args)
    fitted = baseline(torch.eye(3)).squeeze(-1).detach()
    explained_variance = rb.explained_variance(batch["values"], batch["returns"])  # as Run.log logs it
    record_learning(seed, largest_error=(fitted - values).abs().max(), explained_variance=explained_variance)
    assert torch.allclose(fitted, values, atol=0.15), (fitted, values)
    assert explained_variance < 0.5  # measured with V_φ before the fit: a fresh network knows nothing


@pytest.mark.parametrize("env_id, ending", [("user_envs:Counter-v0", "truncated"), ("user_envs:Identity", "terminated")])
def test_the_update_bootstraps_truncated_episodes_only(monkeypatch, env_id, ending):
    recorded = {}
    compute_weights = rb.compute_weights

    def spy(episodes, values, last_values, *rest):
        recorded["last_values"] = last_values
        return compute_weights(episodes, values, last_values, *rest)

    monkeypatch.setattr(rb, "compute_weights", spy)
    policy = rb.Policy(1 if "Counter" in env_id else 4, gym.spaces.Discrete(2 if "Counter" in env_id else 4))
    baseline = rb.mlp(policy.actor[0].in_features, 1, out_std=1.0)
    with torch.no_grad():  # V(s) = 7 everywhere
        baseline[-1].weight.zero_()
        baseline[-1].bias.fill_(7.0)
    envs = vector_env(lambda: gym.make(rb.resolve_env_id(env_id)), num_envs=2)
    episodes = rb.collect_batch(envs, policy, 30, CPU, ignore)
    assert all(episode["terminated"] == (ending == "terminated") for episode in episodes)
    rb.reinforce_update(policy, baseline, torch.optim.Adam(policy.parameters()),
                        torch.optim.Adam(baseline.parameters()), rb.make_batch(baseline, episodes, rb.Args(), CPU),
                        rb.Args())
    expected = 7.0 if ending == "truncated" else 0.0
    assert recorded["last_values"] == [pytest.approx(expected)] * len(episodes)
    if ending == "truncated":  # the final observation, not the next episode's first
        assert all(episode["final_obs"][0] == 5 for episode in episodes)


# ---------------------------------------------------------------------------- batches, policy
@BOTH
def test_a_batch_is_complete_episodes_none_started_after_it_was_full(module):
    torch.manual_seed(0)
    num_envs, batch_steps = 4, 300
    policy = module.Policy(4, gym.spaces.Discrete(2))
    envs = vector_env(lambda: gym.make("CartPole-v1"), num_envs)
    step, taken, reported = envs.step, [], []
    envs.step = lambda action: (taken.append(len(action)), step(action))[1]  # counts the env steps
    episodes = module.collect_batch(envs, policy, batch_steps, CPU, lambda *episode: reported.append(episode))
    assert [(episode["end_step"], float(episode["rewards"].sum()), len(episode["rewards"])) for episode in episodes] \
        == [(steps, episodic_return, length) for steps, _, episodic_return, length in reported]
    episodes = sorted(episodes, key=lambda episode: episode["end_step"])
    lengths = np.array([len(episode["rewards"]) for episode in episodes])
    assert lengths.sum() >= batch_steps
    full_at = np.flatnonzero(np.cumsum(lengths) >= batch_steps)[0]  # the episode that filled the batch
    full_iteration = episodes[full_at]["end_step"] // num_envs
    for episode, length in zip(episodes, lengths):
        assert len(episode["obs"]) == len(episode["actions"]) == length
        assert episode["end_step"] // num_envs - length < full_iteration  # it began before the batch was full
    # Dropped steps count as env steps too: the batch ends with the step that ends its last episode,
    # and Run counts the batch's env steps by it.
    assert sum(taken) == episodes[-1]["end_step"]


@BOTH
def test_logprob_and_entropy_are_the_categorical_and_normal_ones(module):
    torch.manual_seed(0)
    obs = torch.randn(5, 3)
    discrete = module.Policy(3, gym.spaces.Discrete(4))
    with torch.no_grad():  # far from uniform
        discrete.actor[-1].bias.copy_(torch.tensor([1.0, 0.0, -1.0, 0.5]))
    actions = torch.tensor([0, 3, 1, 2, 3])
    logprob, entropy = discrete.logprob_entropy(obs, actions)
    categorical = torch.distributions.Categorical(logits=discrete.actor(obs))
    assert torch.allclose(logprob, categorical.log_prob(actions), atol=1e-6)
    assert torch.allclose(entropy, categorical.entropy(), atol=1e-6)
    with torch.no_grad():  # sampled actions come in the policy's proportions
        frequencies = torch.bincount(discrete.sample_action(obs[:1].expand(20_000, 3)), minlength=4) / 20_000
    assert torch.allclose(frequencies, categorical.probs[0], atol=0.015)

    box = module.Policy(3, gym.spaces.Box(-1.0, 1.0, (2,)))
    with torch.no_grad():
        box.log_std.copy_(torch.tensor([-0.5, 0.3]))
    actions = torch.tensor([[0.1, -0.2], [3.0, 0.0], [-4.5, 2.5], [0.0, 0.0], [1.0, -1.0]])  # some out of bounds
    logprob, entropy = box.logprob_entropy(obs, actions)
    normal = torch.distributions.Normal(box.actor(obs), box.log_std.exp())
    assert torch.allclose(logprob, normal.log_prob(actions).sum(-1), atol=1e-5)
    assert torch.allclose(entropy, normal.entropy().sum(-1), atol=1e-6)


@BOTH
def test_the_batch_stores_the_sampled_action_and_the_env_gets_it_clipped(module):
    torch.manual_seed(0)
    policy = module.Policy(2, gym.spaces.Box(-1.0, 1.0, (2,)))
    envs = vector_env(ContinuousIdentity)
    episodes = module.collect_batch(envs, policy, 100, CPU, ignore)
    stored = np.concatenate([episode["actions"] for episode in episodes])
    received = np.array(envs.envs[0].unwrapped.received)
    assert (np.abs(stored) > 1).any()  # σ = 1 at the start: many samples leave the bounds
    np.testing.assert_array_equal(received, np.clip(stored, -1, 1))


# ----------------------------------------------------------------------------------- learning
@pytest.mark.learning
@pytest.mark.parametrize("seed", learning_seeds(1))
@BOTH
def test_learns_cartpole_within_a_small_budget(module, seed, runs_dir, record_learning):
    """40k steps of the defaults: the last 20 episodes average at least 100 for reinforce.py, 200 with
    the baseline (a random policy: 23).

    Seeds 1-20 on AMD EPYC: reinforce.py min 163, median 406; reinforce_baseline.py min 358,
    median 437. Seeds 1-10 on Intel Xeon: min 263, median 411; min 358, median 440. The bounds
    are 61% and 56% of the worst seed's return."""
    summary = module.train(module.Args(seed=seed, total_timesteps=40_000, runs_dir=runs_dir, save_model=False,
                                       eval_episodes=3))
    record_learning(seed, final_return=summary["final_return"])
    bound = 100 if module is rf else 200
    assert summary["final_return"] >= bound, summary["final_return"]


@pytest.mark.learning
@pytest.mark.parametrize("seed", learning_seeds(1))
@BOTH
def test_learns_a_continuous_identity_env(module, seed, runs_dir, record_learning):
    """Acting with the mean 0 scores about -3.3 per episode; hitting the targets scores 0.

    Seeds 1-20 on AMD EPYC: reinforce.py min -0.32, median -0.13; reinforce_baseline.py min
    -0.19, median -0.12. Seeds 1-10 on Intel Xeon: min -0.32, median -0.16; min -0.19, median
    -0.12. The bound -1.0 is three times the worst."""
    args = module.Args(env_id="user_envs:ContinuousIdentityRegistered-v0", gamma=0.0, batch_steps=400,
                       learning_rate=1e-2, total_timesteps=40_000, seed=seed, runs_dir=runs_dir, save_model=False)
    summary = module.train(args)
    record_learning(seed, eval_return=summary["eval_return"])
    assert summary["eval_return"] > -1.0, summary["eval_return"]


# ---------------------------------------------------------------------- determinism and files
@BOTH
def test_same_seed_same_returns_other_seed_other_returns(module, tmp_path):
    def run(seed, name):
        args = module.Args(seed=seed, total_timesteps=3000, batch_steps=1000, runs_dir=str(tmp_path / name),
                           eval_episodes=1)
        summary = module.train(args)
        return summary, [value for _, value in read_scalars(summary["run_dir"], "charts/episodic_return")]
    (first, first_returns), (again, again_returns), (_, other_returns) = run(1, "a"), run(1, "b"), run(2, "c")
    assert len(first_returns) > 100
    assert first_returns == again_returns and first_returns != other_returns
    checkpoints = [torch.load(s["checkpoint"], weights_only=False) for s in (first, again)]
    assert all(torch.equal(a, b) for a, b in zip(checkpoints[0]["policy"].values(), checkpoints[1]["policy"].values()))


@BOTH
def test_run_leaves_the_conventional_files_and_tags(module, runs_dir):
    summary = module.train(module.Args(total_timesteps=3000, batch_steps=1000, runs_dir=runs_dir, eval_episodes=2))
    files = os.listdir(summary["run_dir"])
    assert f"{module.ALGORITHM}.pt" in files and "summary.json" in files
    on_disk = json.load(open(os.path.join(summary["run_dir"], "summary.json")))
    for key in ("algorithm", "env_id", "seed", "global_step", "wall_seconds", "sps", "final_return",
                "eval_return", "eval_return_std", "steps_to_threshold", "args"):
        assert key in on_disk
    assert on_disk["global_step"] >= 3000 and on_disk["algorithm"] == module.ALGORITHM
    tags = ["charts/episodic_return", "charts/episodic_length", "charts/learning_rate", "charts/SPS",
            "losses/policy_loss", "losses/entropy", "losses/approx_kl", "eval/episodic_return"]
    if module is rb:
        tags += ["losses/value_loss", "losses/explained_variance"]
    for tag in tags:
        assert read_scalars(summary["run_dir"], tag), tag
    lengths = [value for _, value in read_scalars(summary["run_dir"], "charts/episodic_length")]
    assert sum(lengths) <= on_disk["global_step"]  # every logged episode was one the batches used


@BOTH
def test_eval_checkpoint_and_resume(module, runs_dir, tmp_path):
    summary = module.train(module.Args(total_timesteps=2000, batch_steps=1000, runs_dir=runs_dir, eval_episodes=2))
    result = run_script(script(module), "--eval-checkpoint", summary["checkpoint"], "--eval-episodes", "2",
                        cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert f"eval: mean return {summary['eval_return']:.1f} ± {summary['eval_return_std']:.1f}" in result.stdout
    saved = torch.load(summary["checkpoint"], weights_only=False)
    result = run_script(script(module), "--resume", summary["checkpoint"], "--total-timesteps", "4000",
                        "--eval-episodes", "1", cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr
    resumed = torch.load(summary["checkpoint"], weights_only=False)
    assert resumed["global_step"] >= 4000 > saved["global_step"] and resumed["args"]["batch_steps"] == 1000
    for name in ("policy", "baseline") if module is rb else ("policy",):
        assert not all(torch.equal(resumed[name][k], saved[name][k]) for k in saved[name])  # it went on training


@BOTH
def test_a_mujoco_env_trains_and_its_observation_statistics_travel_in_the_checkpoint(module, runs_dir):
    # MuJoCo's observations are float64: the networks must get them as float32 all the same.
    summary = module.train(module.Args(env_id="InvertedPendulum-v5", norm_obs=True, total_timesteps=2000,
                                       batch_steps=1000, runs_dir=runs_dir, eval_episodes=1))
    checkpoint = torch.load(summary["checkpoint"], weights_only=False)
    assert checkpoint["obs_rms"].count >= 2000 and checkpoint["action_space"] == "Box(1,)"


@BOTH
def test_ctrl_c_saves_a_checkpoint_that_resume_continues(module, tmp_path):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    process = subprocess.Popen([sys.executable, os.path.join(ROOT, script(module)), "--batch-steps", "500"],
                               cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout.readline().startswith(f"{module.ALGORITHM} on CartPole-v1")
    time.sleep(2.0)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "continue with --resume" in stdout
    (run_dir,) = os.listdir(tmp_path / "runs")
    checkpoint = torch.load(tmp_path / "runs" / run_dir / f"{module.ALGORITHM}.pt", weights_only=False)
    assert 500 <= checkpoint["global_step"] < 500_000


@BOTH
def test_non_finite_rewards_stop_training_without_a_checkpoint(module, tmp_path):
    result = run_script(script(module), "--env-id", "user_envs:NaNReward", "--batch-steps", "200",
                        "--total-timesteps", "20000", cwd=str(tmp_path))
    assert result.returncode == 1
    assert "training stopped" in result.stderr and "Traceback" not in result.stderr
    (run_dir,) = os.listdir(tmp_path / "runs")
    summary = json.load(open(tmp_path / "runs" / run_dir / "summary.json"))
    assert summary["failed"] and summary["global_step"] < 20000


@BOTH
def test_actions_numbered_from_a_start_other_than_zero(module, runs_dir):
    """ShiftedActions raises on an action outside 1 .. 4: the env gets the policy's index shifted by
    the space's start, in the batches and in evaluation, and the checkpoint records the start."""
    summary = module.train(module.Args(env_id="user_envs:ShiftedActions", total_timesteps=400, batch_steps=200,
                                       runs_dir=runs_dir, eval_episodes=2))
    assert torch.load(summary["checkpoint"], weights_only=False)["action_space"] == "Discrete(4, start=1)"
    assert summary["eval_return"] is not None


@BOTH
def test_users_own_env_class_trains_from_the_command_line(module, tmp_path):
    result = run_script(script(module), "--env-id", "user_envs:ContinuousIdentity", "--total-timesteps", "400",
                        "--batch-steps", "200", "--eval-episodes", "2", cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr
    (run_dir,) = os.listdir(tmp_path / "runs")
    summary = json.load(open(tmp_path / "runs" / run_dir / "summary.json"))
    assert summary["global_step"] == 400 and summary["eval_return"] is not None


# --------------------------------------------------------------------------------- bad input
@pytest.fixture(scope="module")
def cartpole_checkpoints(tmp_path_factory):
    runs = str(tmp_path_factory.mktemp("runs"))
    return {module: module.train(module.Args(total_timesteps=500, batch_steps=500, runs_dir=runs,
                                             eval_episodes=1))["checkpoint"] for module in (rf, rb)}


BAD_INPUTS = {
    "image observations": (["--env-id", "user_envs:ImageObservation"], "flat Box"),
    "baseline's regression steps": (["--vf-iters", "0"], "--vf-iters must be positive"),
    "baseline's learning rate": (["--vf-learning-rate", "-1"], "--vf-learning-rate must be"),
    "matrix actions": (["--env-id", "user_envs:MultiDimensionalAction"], "flat Box"),
    "unknown env, with a suggestion": (["--env-id", "CartPole-v9"], "CartPole"),
    "module that does not import": (["--env-id", "no_such_module:Env-v0"], "cannot import"),
    "empty batch": (["--batch-steps", "0"], "--batch-steps must be positive"),
    "gamma above one": (["--gamma", "1.5"], "--gamma must lie in [0, 1]"),
    "learning rate not a number": (["--learning-rate", "nan"], "--learning-rate must be a positive finite"),
    "both resume and eval": (["--resume", "a.pt", "--eval-checkpoint", "b.pt"], "not both"),
    "missing checkpoint": (["--eval-checkpoint", "nowhere.pt"], "does not exist"),
    "checkpoint of another env": (["--env-id", "Acrobot-v1", "--eval-checkpoint", "{own}"], "pass --env-id CartPole-v1"),
    "checkpoint of the other script": (["--resume", "{other}", "--total-timesteps", "2000"], "written by"),
}


# The checks are the same lines in both scripts: all of them on reinforce_baseline.py, a few on reinforce.py.
CASES = [(rb, case) for case in BAD_INPUTS] + [(rf, case) for case in ("image observations", "gamma above one",
                                                                       "checkpoint of the other script")]


@pytest.mark.parametrize("module, case", CASES, ids=[f"{module.ALGORITHM}: {case}" for module, case in CASES])
def test_bad_input_gives_one_line_and_exit_status_2(module, case, tmp_path, cartpole_checkpoints):
    flags, message = BAD_INPUTS[case]
    other = rb if module is rf else rf
    flags = [flag.format(own=cartpole_checkpoints[module], other=cartpole_checkpoints[other]) for flag in flags]
    check_usage_error(script(module), flags, message, tmp_path)


@BOTH
def test_help_documents_every_flag(module):
    check_help(script(module), module.Args)
