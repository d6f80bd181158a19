"""The envs users bring (issue 20): observations every script flattens into one vector, images it
refuses, headless video, a policy whose best form is random, and the mistakes of earlier notes."""
import glob
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
from gymnasium.wrappers.utils import RunningMeanStd

import a2c
import ppo
import ppo_continuous
import reinforce
import reinforce_baseline
import trpo
import user_envs
from conftest import ROOT, TESTS, check_usage_error, learning_seeds, run_script


def summary_of(runs_dir: str) -> dict:
    (path,) = glob.glob(os.path.join(runs_dir, "*", "summary.json"))
    with open(path) as f:
        return json.load(f)


# ---------------------------------------------------------------------------------- flattening
@pytest.mark.parametrize("module", [reinforce, a2c, ppo_continuous])
def test_observations_are_flattened_before_they_are_normalised(module):
    """Blackjack-v1 observes a Tuple of three Discretes (32, 11, 2): one vector of 45, one-hot in
    each part; the running statistics see that vector."""
    obs_rms = RunningMeanStd(shape=(45,))
    if module is reinforce:
        env = module.make_env("Blackjack-v1", obs_rms)()
    else:
        env = module.make_env("Blackjack-v1", obs_rms, None, 0.99)()
    obs, _ = env.reset(seed=3)
    assert env.observation_space.shape == (45,) and obs.shape == (45,)
    assert obs_rms.count > 1  # the vector, not the tuple, reached the statistics
    raw = gym.make("Blackjack-v1").reset(seed=3)[0]
    flat = gym.spaces.flatten(gym.make("Blackjack-v1").observation_space, raw)
    assert flat.sum() == 3  # one-hot in each of the three parts
    assert np.allclose(obs, np.clip((flat - obs_rms.mean) / np.sqrt(obs_rms.var + 1e-8), -10, 10))


def test_the_rollout_stores_the_flat_observations():
    envs = ppo.make_vec_env(ppo.resolve_env_id("user_envs:DictOfBoxes-v0"), 2)
    agent = ppo.Agent(6, 4)
    obs, _ = envs.reset(seed=0)
    rollout, _ = ppo.collect_rollout(envs, agent, obs, 3, torch.device("cpu"), lambda *a: None)
    assert rollout["obs"].shape == (3, 2, 6) and rollout["next_obs"].shape == (3, 2, 6)


SCRIPTS = {"reinforce.py": reinforce, "reinforce_baseline.py": reinforce_baseline, "a2c.py": a2c, "trpo.py": trpo,
           "ppo.py": ppo, "ppo_continuous.py": ppo_continuous}
SHORT = {"trpo.py": {"num_steps": 64}, "ppo.py": {"num_steps": 64},
         "ppo_continuous.py": {"num_steps": 64, "num_minibatches": 2}}  # short rollouts, few steps on each


def short_run(script: str, env_id: str, runs_dir: str, short_rollouts: bool = True, **flags) -> dict:
    """Train in this process (with rollouts of 64 steps, if short_rollouts, where a script's
    default is longer); the summary."""
    module = SCRIPTS[script]
    if short_rollouts:
        flags = {**SHORT.get(script, {}), **flags}
    return module.train(module.Args(env_id=env_id, runs_dir=runs_dir, **flags))


@pytest.mark.parametrize("script, env_id", [
    ("reinforce.py", "Blackjack-v1"), ("a2c.py", "Blackjack-v1"), ("ppo.py", "Blackjack-v1"),
    ("reinforce_baseline.py", "user_envs:DictOfBoxes-v0"), ("trpo.py", "user_envs:DictOfBoxes-v0"),
    ("ppo.py", "user_envs:DictOfBoxes-v0"), ("a2c.py", "user_envs:ContinuousDictOfBoxes-v0"),
    ("ppo_continuous.py", "user_envs:ContinuousDictOfBoxes-v0")])
def test_tuple_and_dict_observations_train(script, env_id, runs_dir):
    """Every script trains on a flattened Tuple or Dict observation, with each kind of action it
    takes (check_spaces and the flattening lines are the same in every script, tests/test_ladder.py)."""
    summary = short_run(script, env_id, runs_dir, total_timesteps=600, eval_episodes=2)
    assert summary["eval_return"] is not None and not summary["failed"]


@pytest.mark.parametrize("script, env_id", [("reinforce.py", "Blackjack-v1"),
                                            ("ppo_continuous.py", "user_envs:ContinuousDictOfBoxes-v0")])
def test_checkpoints_of_flattened_observations_evaluate(script, env_id, tmp_path):
    summary = short_run(script, env_id, str(tmp_path / "runs"), total_timesteps=600, eval_episodes=2)
    result = run_script(script, "--eval-checkpoint", summary["checkpoint"], "--eval-episodes", "2", cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "eval: mean return" in result.stdout


def test_image_observations_are_refused_in_one_line(tmp_path):
    check_usage_error("ppo_continuous.py", ["--env-id", "CarRacing-v3"], "uses MLPs on vector observations", tmp_path)


@pytest.mark.parametrize("module", [reinforce, a2c, ppo])
def test_a_dict_holding_an_image_is_refused(module):
    with pytest.raises(module.UsageError, match="uses MLPs on vector observations"):
        module.check_env("user_envs:DictWithImage")


def test_observation_problem_names_what_cannot_be_flattened():
    Box, Discrete = gym.spaces.Box, gym.spaces.Discrete
    assert reinforce.observation_problem(Box(0, 1, (3,))) is None
    assert reinforce.observation_problem(gym.spaces.Tuple([Discrete(3), gym.spaces.MultiBinary(2)])) is None
    assert reinforce.observation_problem(gym.spaces.Dict({"a": Box(0, 1, (2,)), "b": Discrete(4)})) is None
    assert "images" in reinforce.observation_problem(Box(0, 255, (8, 8, 3), np.uint8))
    assert "images" in reinforce.observation_problem(gym.spaces.Dict({"a": gym.spaces.Tuple([Box(0, 1, (2, 2))])}))
    assert "Text" in reinforce.observation_problem(gym.spaces.Text(5))


# -------------------------------------------------------------------------- toy-text, learned
# An entropy bonus for a2c.py and ppo.py, and raw advantages for ppo.py: see the test's docstring.
FROZEN_LAKE_FLAGS = {"reinforce.py": {}, "a2c.py": {"ent_coef": 0.01}, "ppo.py": {"ent_coef": 0.01, "norm_adv": False}}


@pytest.mark.learning
@pytest.mark.parametrize("script", list(FROZEN_LAKE_FLAGS))
@pytest.mark.parametrize("seed", learning_seeds(1))
def test_frozen_lake_is_solved(script, seed, runs_dir, record_learning):
    """FrozenLake-v1's 4x4 map without slipping (tests/user_envs.py: FrozenLakeNotSlippery-v0):
    reward 1 at the goal, 0 elsewhere. Greedy success rate over 10 episodes at least 0.9 after
    20,000 steps. Greedy play of a deterministic map is all or nothing, so the bound is the
    issue's 0.9; what must hold is that every seed solves it.

    With each script's defaults, seeds 1-10 on Intel Xeon all solved it
    (benchmark/results/envs/frozen_lake.txt), but on AMD EPYC ppo.py never once reached the goal
    on seeds 6 and 12 of 1-20, and a2c.py reached it twice on seed 16 and then lost it: a policy
    can turn deterministic before its first success, and nothing brings it back. An entropy bonus
    of 0.01 keeps a2c.py exploring; ppo.py needs its advantages unnormalised as well (with the
    bonus and normalised advantages, seeds 6 and 12 still failed). With these flags, seeds 1-40
    on AMD EPYC: greedy success 1.0 on every seed for all three; a2c.py's training return first
    averaged 0.9 by step 3,768 at the latest, ppo.py's by 5,200, of 20,000; reinforce.py (no
    flags) solved every seed on both machines, although on Intel its sampled episodes still
    reached the goal only 20-55% of the time."""
    summary = short_run(script, "user_envs:FrozenLakeNotSlippery-v0", runs_dir, seed=seed, short_rollouts=False,
                        total_timesteps=20_000, **FROZEN_LAKE_FLAGS[script])
    success = summary["eval_return"]  # the mean return is the success rate
    record_learning(seed, success_rate=success)
    assert success >= 0.9


# --------------------------------------------------------- a policy whose best form is random
@pytest.mark.learning
@pytest.mark.parametrize("seed", learning_seeds(1))
def test_sampled_evaluation_scores_the_stochastic_optimum_where_greedy_loops(seed, tmp_path, record_learning):
    """Sutton and Barto's short corridor (tests/user_envs.py): every state looks alike and one swaps
    the actions, so a deterministic policy loops until the time limit (-100) and the best one goes
    right with probability 2 - √2, for -11.66. After 30,000 steps of reinforce.py, sampled evaluation
    over 100 episodes must reach -16; greedy evaluation of the same checkpoint gets -100. On seeds
    1-10 (Intel Xeon, benchmark/results/envs/short_corridor.txt) sampled evaluation scored -9.97 to
    -13.78 (median -11.8; 100 episodes of one policy vary by about ±1); seeds 1-20 on AMD EPYC
    (benchmark/results/learning_bounds/amd-epyc.md): -9.88 to -12.55 (median -11.62). The bound
    keeps 2.2 below the worst, 37% below the optimum and far above any deterministic policy."""
    optimum = user_envs.short_corridor_value(2 - 2 ** 0.5)
    assert optimum == pytest.approx(-11.657, abs=1e-3)
    summary = reinforce.train(reinforce.Args(env_id="user_envs:ShortCorridor-v0", total_timesteps=30_000, seed=seed,
                                             eval_episodes=100, eval_greedy=False, runs_dir=str(tmp_path / "runs")))
    assert summary["eval_mode"] == "sampled"
    greedy = reinforce.evaluate_checkpoint(reinforce.Args(eval_checkpoint=summary["checkpoint"], eval_greedy=True,
                                                          env_id="user_envs:ShortCorridor-v0", eval_episodes=3))
    greedy_return = float(np.mean(greedy))
    record_learning(seed, sampled=summary["eval_return"], greedy=greedy_return)
    assert summary["eval_return"] >= -16
    assert greedy_return == -100


def test_short_corridor_values():
    """The closed form against a long simulation of one stochastic policy."""
    env, rng, returns = user_envs.ShortCorridor(), np.random.default_rng(0), []
    for _ in range(20_000):
        env.reset(seed=int(rng.integers(1 << 30)))
        total, done = 0.0, False
        while not done:
            _, reward, done, _, _ = env.step(int(rng.random() < 0.6))
            total += reward
        returns.append(total)
    assert np.mean(returns) == pytest.approx(user_envs.short_corridor_value(0.6), abs=0.3)


# ------------------------------------------------------------------------- earlier notes' mistakes
def test_a_class_is_found_when_its_module_also_registers_a_versioned_id():
    """user_envs registers ShortCorridor-v0; `user_envs:ShortCorridor` names the class itself."""
    env_id = reinforce.resolve_env_id("user_envs:ShortCorridor")
    assert env_id == "user_envs.ShortCorridor"
    assert isinstance(gym.make(env_id).unwrapped, user_envs.ShortCorridor)
    assert reinforce.resolve_env_id("user_envs:ShortCorridor-v0") == "ShortCorridor-v0"


def test_reinforce_cuts_episodes_that_never_end(runs_dir):
    """CounterForever-v0 has no time limit and never terminates: each episode is cut at 10,000
    steps (make_env is the same in reinforce_baseline.py, tests/test_ladder.py)."""
    summary = reinforce.train(reinforce.Args(env_id="user_envs:CounterForever-v0", total_timesteps=100,
                                             batch_steps=100, eval_episodes=1, runs_dir=runs_dir))
    assert summary["global_step"] == 10_000 and summary["eval_return"] == 0.0


def test_gae_ignores_the_value_of_a_terminated_successor():
    """A NaN value of a final observation (a broken env's NaN observation) must not reach Â_t."""
    rewards = torch.tensor([1.0, 1.0, 1.0])
    values = torch.tensor([0.5, 0.5, 0.5])
    next_values = torch.tensor([0.5, float("nan"), 0.5])
    terminations, truncations = torch.tensor([0.0, 1.0, 0.0]), torch.zeros(3)
    for module in (a2c, ppo):
        advantages = module.compute_gae(rewards, values, next_values, terminations, truncations, 0.9, 0.95)
        assert torch.isfinite(advantages).all()
        assert advantages[1] == pytest.approx(0.5)  # r - V(s): nothing after the termination


@pytest.mark.parametrize("script", ["a2c.py", "trpo.py"])
def test_a_nan_final_observation_does_not_stop_training(script, runs_dir):
    summary = short_run(script, "user_envs:NaNAtTermination", runs_dir, total_timesteps=1000, eval_episodes=1)
    assert not summary["failed"]


def test_an_exp_name_with_a_slash_is_refused_in_one_line(tmp_path):
    check_usage_error("a2c.py", ["--exp-name", "a/b"], "--exp-name a/b", tmp_path)


@pytest.mark.parametrize("inherited", [signal.SIG_DFL, signal.SIG_IGN], ids=["from-a-terminal", "started-with-&"])
def test_ctrl_c_during_the_final_evaluation_keeps_what_was_saved(inherited, tmp_path):
    """Training ends, the checkpoint is saved, evaluation begins (a million episodes): Ctrl-C then
    stops the evaluation, says so, and still writes summary.json; exit status 130. Also when the
    script starts with SIGINT ignored, as `&` in a shell script (or a CI runner started so) leaves
    it: the evaluation then ran on for good, as it did in CI until StopOnSignal put back Python's
    handler rather than the inherited "ignore"."""
    env = dict(os.environ, PYTHONPATH=TESTS, PYTHONUNBUFFERED="1")
    process = subprocess.Popen([sys.executable, os.path.join(ROOT, "reinforce.py"), "--total-timesteps", "1000",
                                "--eval-episodes", "1000000", "--runs-dir", "runs"], cwd=str(tmp_path), env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, inherited))
    deadline = time.time() + 60
    while not glob.glob(str(tmp_path / "runs" / "*" / "reinforce.pt")) and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)  # into the evaluation
    process.send_signal(signal.SIGINT)
    try:
        stdout, stderr = process.communicate(timeout=60)
    finally:
        process.kill()  # not a million episodes left running if it failed to stop
    assert process.returncode == 130, stderr
    assert "aborted without saving" not in stderr
    assert "evaluation stopped by Ctrl-C" in stdout
    summary = summary_of(str(tmp_path / "runs"))
    assert summary["eval_return"] is None and summary["signal"] == "SIGINT" and not summary["interrupted"]
    assert os.path.exists(os.path.join(tmp_path, summary["checkpoint"]))


# ------------------------------------------------------------------------------ headless video
def test_video_without_a_display_asks_mujoco_for_egl(monkeypatch):
    for name in ("MUJOCO_GL", "DISPLAY", "WAYLAND_DISPLAY"):
        monkeypatch.delenv(name, raising=False)
    try:
        reinforce.check_env("CartPole-v1", video=True)  # CartPole renders without OpenGL
    finally:
        assert os.environ.get("MUJOCO_GL") == "egl"
    monkeypatch.setenv("DISPLAY", ":0")
    monkeypatch.delenv("MUJOCO_GL")
    reinforce.check_env("CartPole-v1", video=True)
    assert "MUJOCO_GL" not in os.environ  # a display: MuJoCo chooses for itself


def test_an_env_that_cannot_render_is_one_line_before_training(tmp_path):
    """MuJoCo with a renderer it cannot start (here, a name it does not know): the script says
    what headless rendering needs, in one line, exit status 2."""
    code = ("import ppo_continuous, sys\n"
            "try:\n    ppo_continuous.check_env('Hopper-v5', video=True)\n"
            "except ppo_continuous.UsageError as e:\n    print(e); sys.exit(2)\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, MUJOCO_GL="no-such-renderer", PYTHONPATH=ROOT))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "libegl1 libegl-mesa0" in result.stdout and "MUJOCO_GL" in result.stdout
    assert len(result.stdout.strip().splitlines()) == 1
