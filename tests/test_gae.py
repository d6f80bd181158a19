"""GAE and n-step returns, in closed form, through the own compute_gae of each script that has one.

The same cases for every script: the function is written again in each (one file, one algorithm),
so each copy is checked.
"""

import pytest
import torch

import a2c
import trpo
import ppo
import ppo_continuous


@pytest.fixture(params=[a2c, trpo, ppo, ppo_continuous], ids=lambda module: module.__name__)
def module(request):
    return request.param


def gae(module, rewards, values, next_values, terminations=None, truncations=None, gamma=0.99, lam=1.0):
    as_tensor = lambda x: torch.tensor(x, dtype=torch.float32)
    zeros = [0.0] * len(rewards)
    return module.compute_gae(as_tensor(rewards), as_tensor(values), as_tensor(next_values),
                              as_tensor(terminations or zeros), as_tensor(truncations or zeros), gamma, lam).tolist()


@pytest.mark.parametrize("gamma", [1.0, 0.99])
@pytest.mark.parametrize("lam", [0.0, 0.9, 1.0])
def test_gae_reward_only_at_terminal_step_with_constant_value(module, gamma, lam):
    # Four steps, V = c everywhere, reward 1 at the last step, which terminates. Then
    # δ_t = γc - c for t < 3 and δ_3 = 1 - c, and Â_t = Σ_k (γλ)^k δ_{t+k} in closed form.
    c, T = 0.5, 4
    deltas = [gamma * c - c] * (T - 1) + [1.0 - c]
    expected = [sum((gamma * lam) ** k * deltas[t + k] for k in range(T - t)) for t in range(T)]
    got = gae(module, [0, 0, 0, 1], [c] * T, [c] * T, terminations=[0, 0, 0, 1], gamma=gamma, lam=lam)
    assert got == pytest.approx(expected, abs=1e-6)


def test_lambda_zero_is_the_one_step_td_error(module):
    rewards, values, next_values = [1.0, -2.0, 0.5], [0.3, 0.7, -0.1], [0.7, -0.1, 2.0]
    expected = [r + 0.9 * nv - v for r, v, nv in zip(rewards, values, next_values)]
    assert gae(module, rewards, values, next_values, gamma=0.9, lam=0.0) == pytest.approx(expected, abs=1e-6)


def test_lambda_one_is_the_n_step_return_bootstrapped_at_the_end_of_the_rollout_minus_v(module):
    # A rollout of 5 steps inside one episode: step t sees the 5 - t rewards left in the rollout,
    # then V(s_5) for the rest, R̂_t = Σ_{l<5-t} γ^l r_{t+l} + γ^(5-t) V(s_5).
    gamma, rewards = 0.9, [1.0, 0.0, 2.0, -1.0, 0.5]
    values = [0.2, -0.4, 1.0, 0.3, 0.8]
    v_last = 3.0
    next_values = values[1:] + [v_last]
    expected = [sum(gamma ** l * rewards[t + l] for l in range(5 - t)) + gamma ** (5 - t) * v_last - values[t]
                for t in range(5)]
    assert gae(module, rewards, values, next_values, gamma=gamma, lam=1.0) == pytest.approx(expected, abs=1e-5)
    # An episode that terminates at the last step needs no bootstrap: the Monte-Carlo return.
    terminated = gae(module, rewards, values, next_values, terminations=[0, 0, 0, 0, 1], gamma=gamma, lam=1.0)
    expected = [sum(gamma ** l * rewards[t + l] for l in range(5 - t)) - values[t] for t in range(5)]
    assert terminated == pytest.approx(expected, abs=1e-5)


def test_a_truncation_is_bootstrapped_and_a_termination_is_not(module):
    # Step 0 ends an episode; its successor value V(final_obs) = 10 must count only if truncated.
    # Step 1 starts a new episode, whose advantage must not leak into step 0 either way.
    rewards, values, next_values = [1.0, 5.0], [2.0, 3.0], [10.0, 4.0]
    truncated = gae(module, rewards, values, next_values, truncations=[1, 0], gamma=0.9, lam=1.0)
    terminated = gae(module, rewards, values, next_values, terminations=[1, 0], gamma=0.9, lam=1.0)
    assert truncated[0] == pytest.approx(1.0 + 0.9 * 10.0 - 2.0)
    assert terminated[0] == pytest.approx(1.0 - 2.0)
    assert truncated[1] == terminated[1] == pytest.approx(5.0 + 0.9 * 4.0 - 3.0)


def test_gae_is_computed_per_env_column(module):
    rewards = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    values, zeros = torch.tensor([[0.5, -1.0], [2.0, 0.0]]), torch.zeros(2, 2)
    both = module.compute_gae(rewards, values, values, zeros, zeros, 0.5, 0.8)
    for i in range(2):
        alone = module.compute_gae(rewards[:, i], values[:, i], values[:, i], zeros[:, i], zeros[:, i], 0.5, 0.8)
        assert torch.equal(both[:, i], alone)
