"""PPO's other objectives from the paper (ppo.py and ppo_continuous.py, --objective): the adaptive β
rule, the closed-form KL, the penalty's pull back toward π_θold, the plain surrogate, each objective
learning, and β carried across a resume."""

import pytest
import torch

import ppo
import ppo_continuous as pc
from conftest import learning_seeds, read_scalars

MODULES = [(ppo, lambda: ppo.Agent(4, 3), 4), (pc, lambda: pc.Agent(3, 2), 3)]


def minibatch(agent, obs_dim: int, n: int = 256, seed: int = 0) -> dict:
    """A minibatch as make_batch builds it, with π_θold the agent as it is now."""
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(n, obs_dim, generator=g)
    with torch.no_grad():
        actions = agent.sample_action(obs)
        logprobs = agent.logprob_entropy(obs, actions)[0]
        dist = agent.distribution(obs)
    return {"obs": obs, "actions": actions, "logprobs": logprobs, "dist": dist,
            "advantages": torch.randn(n, generator=g), "returns": torch.randn(n, generator=g),
            "values": torch.randn(n, generator=g)}


def moved(agent, scale: float = 0.3, seed: int = 1):
    """The agent with its actor (and log σ) moved at random: a π_θ away from π_θold."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in agent.named_parameters():
            if not name.startswith("critic"):
                p.add_(scale * torch.randn(p.shape, generator=g))
    return agent


@pytest.mark.parametrize("module", [ppo, pc])
def test_beta_halves_below_and_doubles_above_the_band_around_d_targ(module):
    d_targ = 0.01
    assert module.adapt_beta(1.0, 0.001, d_targ) == 0.5
    assert module.adapt_beta(1.0, d_targ / 1.5 - 1e-9, d_targ) == 0.5
    for inside in (d_targ / 1.5, d_targ, 1.5 * d_targ):  # the band's edges included
        assert module.adapt_beta(1.0, inside, d_targ) == 1.0
    assert module.adapt_beta(1.0, 1.5 * d_targ + 1e-9, d_targ) == 2.0
    assert module.adapt_beta(3.0, 0.5, d_targ) == 6.0


def test_the_closed_form_kl_is_torchs_categorical_kl():
    torch.manual_seed(0)
    old, new = ppo.Agent(4, 3), moved(ppo.Agent(4, 3))
    obs = torch.randn(100, 4)
    expected = torch.distributions.kl_divergence(torch.distributions.Categorical(logits=old.actor(obs)),
                                                 torch.distributions.Categorical(logits=new.actor(obs)))
    torch.testing.assert_close(new.kl_from(old.distribution(obs), obs), expected)


def test_the_closed_form_kl_is_torchs_gaussian_kl():
    torch.manual_seed(0)
    old, new = pc.Agent(3, 2), moved(pc.Agent(3, 2))
    obs = torch.randn(100, 3)
    gaussian = lambda agent: torch.distributions.Independent(
        torch.distributions.Normal(agent.actor(obs), agent.log_std.exp()), 1)
    expected = torch.distributions.kl_divergence(gaussian(old), gaussian(new))
    torch.testing.assert_close(new.kl_from(old.distribution(obs), obs), expected)
    assert (expected > 0).all()


@pytest.mark.parametrize("module, make_agent, obs_dim", MODULES)
def test_a_step_on_the_penalty_alone_pulls_the_policy_back_toward_the_old_one(module, make_agent, obs_dim):
    torch.manual_seed(0)
    agent = make_agent()
    batch = {**minibatch(agent, obs_dim), "advantages": torch.zeros(256)}  # Â = 0: the surrogate is 0
    moved(agent)
    args = module.Args(objective="kl-fixed", norm_adv=False)
    kl = lambda: agent.kl_from(batch["dist"], batch["obs"]).mean().item()
    before = kl()
    losses = module.ppo_loss(agent, batch, args, beta=1.0)
    assert losses["policy_loss"].item() == pytest.approx(before, rel=1e-5)  # β KL, nothing else
    optimizer = torch.optim.SGD(agent.parameters(), lr=0.05)
    losses["policy_loss"].backward()
    optimizer.step()
    assert 0 < kl() < 0.9 * before


@pytest.mark.parametrize("module, make_agent, obs_dim", MODULES)
def test_the_plain_objective_is_the_surrogate_unclipped(module, make_agent, obs_dim):
    torch.manual_seed(0)
    agent = make_agent()
    batch = minibatch(agent, obs_dim)
    moved(agent)  # ratios far outside [1 - ε, 1 + ε]
    args = module.Args(objective="plain", norm_adv=False)
    losses = module.ppo_loss(agent, batch, args, beta=1.0)
    ratio = (agent.logprob_entropy(batch["obs"], batch["actions"])[0] - batch["logprobs"]).exp()
    torch.testing.assert_close(losses["policy_loss"], -(ratio * batch["advantages"]).mean())
    assert losses["clipfrac"] == 0
    clipped = module.ppo_loss(agent, batch, module.Args(norm_adv=False), beta=1.0)
    assert clipped["clipfrac"] > 0.1 and clipped["policy_loss"] != losses["policy_loss"]


def test_resume_goes_on_with_the_beta_the_run_had_reached(tmp_path):
    args = dict(objective="kl-adaptive", kl_beta=1.0, runs_dir=str(tmp_path / "runs"), eval_episodes=1)
    first = ppo.train(ppo.Args(total_timesteps=2048, **args))
    saved = torch.load(first["checkpoint"], weights_only=False)["kl_beta"]
    assert saved != 1.0  # 8 updates moved it
    resumed = ppo.train(ppo.Args(total_timesteps=2304, resume=first["checkpoint"], **args))
    (step, beta), = [(s, b) for s, b in read_scalars(resumed["run_dir"], "losses/kl_beta") if s > 2048]
    assert step == 2304 and beta == pytest.approx(saved, rel=1e-6)  # the update after the resume used it


# ----------------------------------------------------------------------------------- learning
@pytest.mark.learning
@pytest.mark.parametrize("objective", ["plain", "kl-fixed", "kl-adaptive"])
@pytest.mark.parametrize("seed", learning_seeds(1))
def test_each_objective_learns_cartpole(objective, seed, runs_dir, record_learning):
    """ppo.py's defaults but the objective, 40,000 steps; a random policy scores about 22.

    Seeds 1-5 on AMD EPYC, final (training) return: plain min 183, median 500; kl-fixed min 453,
    median 500; kl-adaptive 500 on all. The bound 75 lies at 40% of the worst, 3 times random."""
    summary = ppo.train(ppo.Args(objective=objective, seed=seed, total_timesteps=40_000, runs_dir=runs_dir,
                                 eval_episodes=5, save_model=False))
    record_learning(seed, final_return=summary["final_return"], eval_return=summary["eval_return"])
    assert summary["final_return"] >= 75, summary["final_return"]


@pytest.mark.learning
@pytest.mark.parametrize("objective", ["kl-fixed", "kl-adaptive"])
@pytest.mark.parametrize("seed", learning_seeds(1))
def test_each_objective_learns_pendulum(objective, seed, runs_dir, record_learning):
    """The settings of test_ppo_continuous's Pendulum test but the objective, 40,960 steps; random
    actions score -1,256 ± 296 per episode.

    Seeds 1-5 on AMD EPYC, final (training) return: kl-fixed min -469, median -348; kl-adaptive min
    -682, median -502. The bound -1,000 lies 318 below the worst and 256 above random. The plain
    surrogate is left out: it did not learn (-1,530 to -985, median -1,216), as in the paper, where
    it scored below a random policy on average."""
    summary = pc.train(pc.Args(env_id="Pendulum-v1", objective=objective, seed=seed, total_timesteps=40_960,
                               num_envs=4, num_steps=512, gamma=0.9, learning_rate=1e-3, runs_dir=runs_dir,
                               eval_episodes=5, save_model=False))
    record_learning(seed, final_return=summary["final_return"], eval_return=summary["eval_return"])
    assert summary["final_return"] >= -1000, summary["final_return"]
