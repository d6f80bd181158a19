"""a3c.py: one worker makes a2c.py's updates; several share θ, φ, the optimiser's statistics and the
normalisation statistics, and push stale gradients; learning; Ctrl-C, failures and bad input.

Each a3c.py run starts its workers as fresh interpreters (spawn), a few seconds each: the runs here
are few and short.
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

import a2c
import a3c
from conftest import ROOT, TESTS, check_help, check_usage_error, learning_seeds, read_scalars, run_script


# ------------------------------------------------------------------------------------ the push
def rollout_of(agent, env_id: str, seed: int, args) -> dict:
    """A batch of args.num_envs x args.num_steps steps of env_id by the agent, as both scripts make it."""
    envs = a2c.make_vec_env(a2c.resolve_env_id(env_id), args.num_envs, None, None, args.gamma)
    obs, _ = envs.reset(seed=seed)
    rollout, _ = a2c.collect_rollout(envs, agent, obs, args.num_steps, torch.device("cpu"), lambda *episode: None)
    envs.close()
    return a2c.make_batch(agent, rollout, args)


@pytest.mark.parametrize("optimizer", ["rmsprop", "adam"])
def test_a_push_from_a_fresh_pull_is_a2cs_update_on_the_same_batch(optimizer):
    """Lock-step, one worker: pull, compute g on the copy, push into the shared θ, φ through the
    shared optimiser. Three such pushes leave θ, φ and the optimiser's statistics bitwise as three
    of a2c.py's updates on the same batches leave them."""
    args = a3c.Args(optimizer=optimizer, ent_coef=0.01, norm_adv=True)
    torch.manual_seed(0)
    reference = a2c.Agent(4, gym.spaces.Discrete(2))
    shared, copy = a3c.Agent(4, gym.spaces.Discrete(2)), a3c.Agent(4, gym.spaces.Discrete(2))
    shared.load_state_dict(reference.state_dict())
    reference_optimizer, shared_optimizer = a2c.make_optimizer(reference, args), a3c.make_optimizer(shared, args)
    a3c.share(shared, shared_optimizer)
    assert all(p.is_shared() for p in shared.parameters())
    assert all(value.is_shared() for state in shared_optimizer.state.values() for value in state.values())
    for seed in range(3):
        batch = rollout_of(reference, "CartPole-v1", seed, args)
        expected = a2c.a2c_update(reference, reference_optimizer, batch, args)
        copy.load_state_dict(shared.state_dict())  # pull
        losses = a3c.a2c_update(copy, a3c.Push(copy, shared, shared_optimizer), batch, args)
        assert losses == expected
        for p, q in zip(reference.parameters(), shared.parameters()):
            assert torch.equal(p, q)
        assert all(torch.equal(p, q) for p, q in zip(shared.parameters(), copy.parameters()))  # pulled after the push
    for p, q in zip(reference.parameters(), shared.parameters()):
        for key, value in reference_optimizer.state[p].items():
            assert torch.equal(value, shared_optimizer.state[q][key]), key


def test_shared_running_statistics_are_gymnasiums_arithmetic_in_shared_memory():
    """The normalising wrappers update SharedRunningMeanStd exactly as gymnasium's own class; the
    numbers live in one shared tensor, which a pickled copy (what spawn sends a worker) shares."""
    import pickle
    from gymnasium.wrappers.utils import RunningMeanStd
    shared, own = a3c.SharedRunningMeanStd(RunningMeanStd(shape=(3,))), RunningMeanStd(shape=(3,))
    for x in np.random.default_rng(0).normal(size=(50, 3)):
        a3c.update_with_one(shared, x)
        a3c.update_with_one(own, x)
    assert np.array_equal(shared.mean, own.mean) and np.array_equal(shared.var, own.var) and shared.count == own.count
    assert shared.memory.is_shared()
    copy = pickle.loads(pickle.dumps(shared))  # a copy by value here; through spawn, the handle
    assert np.array_equal(copy.mean, shared.mean) and copy.count == shared.count
    plain = a3c.plain(shared)
    assert type(plain) is RunningMeanStd and np.array_equal(plain.var, own.var)
    restored = a3c.SharedRunningMeanStd(plain)
    assert np.array_equal(restored.mean, own.mean) and restored.count == own.count


# ----------------------------------------------------------------------- workers, in processes
def returns_of(summary: dict) -> list[tuple[int, float]]:
    return read_scalars(summary["run_dir"], "charts/episodic_return")


def test_one_worker_trains_exactly_as_a2c_and_repeats_itself(tmp_path):
    """With --num-workers 1 nothing is stale and nothing races: the same seed gives a2c.py's episodes
    and weights, with normalised observations and rewards and an annealed learning rate, and the
    same again on a second run."""
    flags = dict(env_id="user_envs:ContinuousIdentityRegistered-v0", norm_obs=True, norm_reward=True,
                 anneal_lr=True, total_timesteps=2000, eval_episodes=2)
    reference = a2c.train(a2c.Args(**flags, runs_dir=str(tmp_path / "a2c")))
    first, again = (a3c.train(a3c.Args(**flags, num_workers=1, runs_dir=str(tmp_path / name))) for name in "ab")
    assert len(returns_of(reference)) == 96 and returns_of(first) == returns_of(reference) == returns_of(again)
    assert first["eval_return"] == reference["eval_return"] and first["staleness_max"] == 0
    saved, expected = (torch.load(summary["checkpoint"], weights_only=False) for summary in (first, reference))
    assert all(torch.equal(saved["agent"][key], expected["agent"][key]) for key in expected["agent"])
    assert np.array_equal(saved["obs_rms"].var, expected["obs_rms"].var)
    assert saved["return_rms"].count == expected["return_rms"].count


def test_workers_share_the_networks_the_optimiser_and_the_statistics_and_push_stale_gradients(runs_dir):
    """Two workers: both push; their pushes reach the main process's θ, φ (it never steps them
    itself) and the one optimiser's statistics; their envs update the one normalisation; and a push
    is sometimes stale (another worker pushed between its pull and its push)."""
    summary = a3c.train(a3c.Args(num_workers=2, norm_obs=True, total_timesteps=20_000, runs_dir=runs_dir,
                                 eval_episodes=1))
    pushes = summary["pushes"]
    assert len(pushes) == 2 and min(pushes) > 0 and sum(pushes) == 20_000 // 40 == summary["global_step"] // 40
    assert summary["staleness_max"] >= 1 and summary["staleness_mean"] > 0
    saved = torch.load(summary["checkpoint"], weights_only=False)
    torch.manual_seed(summary["seed"])  # the main process's θ, φ at the start: seeded, then built
    start = a3c.Agent(4, gym.spaces.Discrete(2)).state_dict()
    assert not any(torch.equal(saved["agent"][key], start[key]) for key in start)
    # Both workers stepped the shared optimiser: more steps than either made (fewer than both, when
    # two increments raced, Hogwild)
    steps = saved["optimizer"]["state"][0]["step"].item()
    assert max(pushes) < steps <= sum(pushes)
    # Both workers' envs updated the statistics: about every step of both (one observation per step
    # and per reset; a race now and then loses an update)
    assert 0.8 * 20_000 < saved["obs_rms"].count < 1.1 * 20_000
    assert read_scalars(summary["run_dir"], "charts/staleness")


@pytest.mark.learning
@pytest.mark.parametrize("seed", learning_seeds(1))
def test_learns_cartpole_with_two_workers(seed, runs_dir, record_learning):
    """40k steps of the defaults on 2 workers: the last 20 episodes average at least 100 (random: 23).

    Seeds 1-10 on AMD EPYC (benchmark/learning_bounds.py, under load): min 186, median 335, max 500.
    Runs with two workers do not repeat (the OS orders the pushes), so the bound is about half the
    worst seed, and four times random."""
    summary = a3c.train(a3c.Args(seed=seed, num_workers=2, total_timesteps=40_000, runs_dir=runs_dir,
                                 save_model=False, eval_episodes=3))
    record_learning(seed, final_return=summary["final_return"])
    assert summary["final_return"] >= 100, summary["final_return"]


@pytest.mark.learning
@pytest.mark.parametrize("seed", learning_seeds(1))
def test_learns_a_continuous_toy_env_with_two_workers(seed, runs_dir, record_learning):
    """Acting with the mean 0 scores about -3.3 per episode; hitting the targets scores 0.

    Seeds 1-10 on AMD EPYC (benchmark/learning_bounds.py): min -0.14, median -0.068. The bound
    -0.5 is more than three times the worst."""
    args = a3c.Args(env_id="user_envs:ContinuousIdentityRegistered-v0", gamma=0.0, total_timesteps=30_000,
                    learning_rate=3e-3, num_workers=2, seed=seed, runs_dir=runs_dir, save_model=False)
    summary = a3c.train(args)
    record_learning(seed, eval_return=summary["eval_return"])
    assert summary["eval_return"] > -0.5, summary["eval_return"]


# ------------------------------------------------------------------------- interruption, failure
def start(*flags: str, cwd) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=TESTS, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, os.path.join(ROOT, "a3c.py"), *flags], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def workers_of(process: subprocess.Popen) -> list[int]:
    """The pids of a process's workers, from /proc: its children that multiprocessing spawned (not
    its resource tracker), in the order they started (pids rise)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as stat, open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                if int(stat.read().rsplit(")", 1)[1].split()[1]) == process.pid and b"spawn_main" in cmdline.read():
                    found.append(int(pid))
        except (OSError, IndexError, ValueError):
            pass
    return sorted(found)


@pytest.mark.parametrize("how", [signal.SIGINT])  # SIGTERM takes the same path (StopOnSignal; test_faults.py)
def test_a_signal_stops_every_worker_saves_and_resume_goes_on_with_other_workers(how, tmp_path):
    process = start("--num-workers", "2", "--total-timesteps", "10000000", cwd=tmp_path)
    assert process.stdout.readline().startswith("A3C on CartPole-v1")
    assert process.stdout.readline().startswith("step ")  # the workers are pushing
    process.send_signal(how)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == {signal.SIGINT: 130, signal.SIGTERM: 143}[how], stderr
    assert "Traceback" not in stderr and "continue with --resume" in stdout
    (run_dir,) = os.listdir(tmp_path / "runs")
    checkpoint = tmp_path / "runs" / run_dir / "a3c.pt"
    step = torch.load(checkpoint, weights_only=False)["global_step"]
    assert 0 < step < 10_000_000 and step % 40 == 0
    summary = json.load(open(tmp_path / "runs" / run_dir / "summary.json"))
    assert summary["interrupted"] and summary["global_step"] == step and sum(summary["pushes"]) * 40 == step
    result = run_script("a3c.py", "--resume", str(checkpoint), "--num-workers", "1", "--total-timesteps",
                        str(step + 400), "--eval-episodes", "1", cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert torch.load(checkpoint, weights_only=False)["global_step"] == step + 400


def test_a_worker_killed_stops_the_run_with_one_line_and_exit_status_1(tmp_path):
    process = start("--num-workers", "2", "--total-timesteps", "10000000", cwd=tmp_path)
    assert process.stdout.readline().startswith("A3C on CartPole-v1")
    assert process.stdout.readline().startswith("step ")
    os.kill(workers_of(process)[-1], signal.SIGKILL)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 1
    assert stderr.strip().splitlines() == [stderr.strip()] and "died (exit status -9; -N: killed by signal N)" in stderr
    assert not workers_of(process)


def test_a_worker_killed_stops_even_workers_stuck_on_a_lock_it_held(tmp_path):
    """A worker killed while it holds a lock the others share (the counter's, the queue's) leaves
    them stuck on it, as one stopped with SIGSTOP is: the run still ends, with the one line."""
    process = start("--num-workers", "2", "--total-timesteps", "10000000", cwd=tmp_path)
    assert process.stdout.readline().startswith("A3C on CartPole-v1")
    assert process.stdout.readline().startswith("step ")
    stuck, killed = workers_of(process)
    os.kill(stuck, signal.SIGSTOP)
    os.kill(killed, signal.SIGKILL)
    try:
        stdout, stderr = process.communicate(timeout=120)
    finally:  # a run that hangs leaves nothing behind
        if process.poll() is None:
            os.kill(stuck, signal.SIGKILL)
            process.kill()
    assert process.returncode == 1
    assert stderr.strip().splitlines() == [stderr.strip()] and "worker 1 died (exit status -9" in stderr
    with pytest.raises(ProcessLookupError):  # killed and reaped, not left stopped
        os.kill(stuck, 0)


@pytest.mark.parametrize("env_id, message", [("user_envs:NaNReward", ": worker 0: loss is nan"),
                                             ("user_envs:BreaksAfterAWhile", "worker 0 failed: RuntimeError: "
                                              "the simulator lost its connection (user_envs.py:")])
def test_a_worker_that_fails_stops_the_run_with_one_line_and_keeps_finite_weights(env_id, message, tmp_path):
    result = run_script("a3c.py", "--env-id", env_id, "--num-workers", "1", "--total-timesteps", "20000",
                        cwd=str(tmp_path))
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr, result.stderr
    assert "training stopped at step" in result.stderr
    (run_dir,) = os.listdir(tmp_path / "runs")
    summary = json.load(open(tmp_path / "runs" / run_dir / "summary.json"))
    assert summary["failed"] and summary["global_step"] < 20000
    checkpoint = torch.load(tmp_path / "runs" / run_dir / "a3c.pt", weights_only=False)
    assert all(torch.isfinite(tensor).all() for tensor in checkpoint["agent"].values())


# --------------------------------------------------------------------------------- bad input
BAD_INPUTS = {
    "no workers": (["--num-workers", "0"], "--num-workers must be positive"),
    "unknown env, with a suggestion": (["--env-id", "CartPole-v9"], "CartPole"),
    "image observations": (["--env-id", "user_envs:ImageObservation"], "flat Box"),
    "lambda above one": (["--gae-lambda", "1.5"], "--gae-lambda must lie in [0, 1]"),
    "missing checkpoint": (["--resume", "nowhere.pt"], "does not exist"),
}


@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_bad_input_gives_one_line_and_exit_status_2(case, tmp_path):
    flags, message = BAD_INPUTS[case]
    check_usage_error("a3c.py", flags, message, tmp_path)


def test_help_documents_every_flag():
    check_help("a3c.py", a3c.Args)
