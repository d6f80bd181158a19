"""What is there for speed computes what the plain way computes. The normalising wrappers' one-sample
update of the running statistics gives gymnasium's numbers, bitwise. --compile (ppo.py and
ppo_continuous.py): torch.compile of the minibatch loss computes what the eager loss computes, a
compiled run is deterministic on one machine, and a machine without a C++ compiler gets one line
and exit status 2 before anything starts."""

import gymnasium as gym
import numpy as np
import pytest
import torch

import a2c
import ppo
import ppo_continuous
import reinforce
import reinforce_baseline
import trpo
from conftest import check_usage_error, read_scalars


@pytest.mark.parametrize("env_id", ["Pendulum-v1", "InvertedPendulum-v5"])  # float32 and float64 observations
@pytest.mark.parametrize("module", [reinforce, reinforce_baseline, a2c, trpo, ppo_continuous])
def test_the_normalising_wrappers_give_gymnasiums_numbers_bitwise(module, env_id):
    """Two copies of the env, one in the script's wrappers and one in gymnasium's, stepped with the
    same random actions through several episodes (InvertedPendulum's end in terminations)."""
    rewards_too = hasattr(module, "NormalizeReward")

    def make(wrappers):
        env = wrappers.NormalizeObservation(gym.make(env_id))
        return wrappers.NormalizeReward(env, gamma=0.99) if rewards_too else env
    ours, theirs = make(module), make(gym.wrappers)
    actions = ours.action_space
    actions.seed(0)
    assert np.array_equal(ours.reset(seed=1)[0], theirs.reset(seed=1)[0])
    episodes = 0
    for _ in range(600):
        action = actions.sample()
        step, expected = ours.step(action), theirs.step(action)
        assert np.array_equal(step[0], expected[0]) and step[0].dtype == expected[0].dtype
        assert step[1:4] == expected[1:4]
        if step[2] or step[3]:
            episodes += 1
            assert np.array_equal(ours.reset()[0], theirs.reset()[0])
    assert episodes >= 3
    pairs = [(ours.get_wrapper_attr("obs_rms"), theirs.get_wrapper_attr("obs_rms"))]
    if rewards_too:
        pairs.append((ours.return_rms, theirs.return_rms))
    for mine, gyms in pairs:
        assert np.array_equal(mine.mean, gyms.mean) and np.array_equal(mine.var, gyms.var)
        assert mine.count == gyms.count


def minibatch(agent, obs_dim: int, n: int = 64) -> dict:
    g = torch.Generator().manual_seed(0)
    obs = torch.randn(n, obs_dim, generator=g)
    with torch.no_grad():
        actions = agent.sample_action(obs)
        logprobs = agent.logprob_entropy(obs, actions)[0] + 0.5 * torch.randn(n, generator=g)  # ρ ≠ 1
        dist = agent.distribution(obs) + 0.1 * torch.randn(n, 1, generator=g)  # a KL above 0
    return {"obs": obs, "actions": actions, "logprobs": logprobs, "dist": dist, "advantages": torch.randn(n, generator=g),
            "returns": torch.randn(n, generator=g), "values": torch.randn(n, generator=g)}


@pytest.mark.parametrize("objective", ["clip", "kl-adaptive"])
@pytest.mark.parametrize("module, make_agent, obs_dim", [(ppo, lambda: ppo.Agent(4, 2), 4),
                                                         (ppo_continuous, lambda: ppo_continuous.Agent(3, 2), 3)])
def test_the_compiled_loss_and_its_gradient_are_the_eager_ones(module, make_agent, obs_dim, objective):
    torch.manual_seed(0)
    agent = make_agent()
    batch = minibatch(agent, obs_dim)
    args = module.Args(clip_vloss=True, ent_coef=0.01, objective=objective)

    def losses_and_gradient(loss_fn):
        agent.zero_grad(set_to_none=True)
        losses = loss_fn(agent, batch, args, 0.5)
        losses["loss"].backward()
        return losses, torch.cat([p.grad.flatten() for p in agent.parameters()])

    eager, eager_grad = losses_and_gradient(module.ppo_loss)
    compiled, compiled_grad = losses_and_gradient(module.compiled(module.ppo_loss))
    assert eager.keys() == compiled.keys()
    for key in eager:
        torch.testing.assert_close(compiled[key], eager[key], rtol=1e-5, atol=1e-6)
    assert eager["clipfrac"] > 0 if objective == "clip" else eager["clipfrac"] == 0  # the clip in play, or not
    torch.testing.assert_close(compiled_grad, eager_grad, rtol=1e-4, atol=1e-6)


def test_a_compiled_run_is_deterministic(tmp_path):
    def run(name):
        return ppo.train(ppo.Args(compile=True, total_timesteps=2048, runs_dir=str(tmp_path / name),
                                  eval_episodes=1))
    first, again = run("a"), run("b")
    returns = [[value for _, value in read_scalars(s["run_dir"], "charts/episodic_return")] for s in (first, again)]
    assert len(returns[0]) > 20 and returns[0] == returns[1]
    weights = [torch.load(s["checkpoint"], weights_only=False)["agent"] for s in (first, again)]
    assert all(torch.equal(a, b) for a, b in zip(weights[0].values(), weights[1].values()))
    assert first["compile_seconds"] > 0 and first["args"]["compile"]


@pytest.mark.parametrize("script", ["ppo.py", "ppo_continuous.py"])
def test_compile_without_a_compiler_is_one_line_and_exit_2(script, tmp_path):
    check_usage_error(script, ["--compile", "--env-id", "Pendulum-v1" if "continuous" in script else "CartPole-v1"],
                      "--compile needs a C++ compiler (no-such-g++)", tmp_path, env={"CXX": "no-such-g++"})


def test_the_losses_are_logged_once_in_500_steps_and_at_the_end(runs_dir):
    """tensorboard takes some 40 µs a scalar, so a2c.py's updates of 40 steps log only now and then."""
    summary = a2c.train(a2c.Args(total_timesteps=2000, runs_dir=runs_dir, eval_episodes=1))
    for tag in ("losses/policy_loss", "losses/explained_variance", "charts/SPS", "charts/learning_rate"):
        assert [step for step, _ in read_scalars(summary["run_dir"], tag)] == [40, 560, 1080, 1600, 2000], tag
    assert len(read_scalars(summary["run_dir"], "charts/episodic_return")) > 20  # every episode, as before
