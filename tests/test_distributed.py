"""ppo.py and ppo_continuous.py under torchrun: two processes on the CPU (gloo)."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from gymnasium.wrappers.utils import RunningMeanStd

import ppo
import ppo_continuous
from conftest import ROOT, TESTS, check_usage_error, learning_seeds, run_script

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone"]  # --standalone: a free port of its own


def torchrun(nproc: int, *command: str, cwd, timeout: float = 180) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=TESTS, PYTHONUNBUFFERED="1")
    return subprocess.run([*TORCHRUN, "--nproc-per-node", str(nproc), *command], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def checked_run(tmp_path, script: str, *flags: str) -> list[dict]:
    """train() of the script on 2 ranks, watched by tests/torchrun_check.py; what each rank saw."""
    result = torchrun(2, os.path.join(TESTS, "torchrun_check.py"), str(tmp_path), script,
                      "--runs-dir", str(tmp_path / "runs"), *flags, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    return [json.load(open(tmp_path / f"rank{rank}.json")) for rank in range(2)]


@pytest.mark.learning
@pytest.mark.parametrize("seed", learning_seeds(1))
def test_two_ranks_stay_identical_save_once_and_learn_like_one_process_with_all_the_envs(seed, tmp_path,
                                                                                         record_learning):
    """Seeds 1-20 on AMD EPYC and 1-10 on Intel Xeon: 20 of 20 greedy steps on target on every
    seed, for two ranks and for one process alike (bound: 18). CartPole-v1, as this test had it before with 50k steps at a
    constant learning rate, left two ranks short of 475 on one of seeds 1-17 and the ratio of steps
    at 0.70-2.0 (benchmark/results/tuning/learning_tests_two_ranks_cartpole_50k.jsonl): too noisy
    for one seed, so CartPole is compared over seeds in benchmark/distributed.sh."""
    flags = dict(env_id="user_envs:IdentityRegistered-v0", total_timesteps=4096, num_envs=8, eval_episodes=10,
                 seed=seed)
    ranks = checked_run(tmp_path, "ppo", *(f"--{k.replace('_', '-')}={v}" for k, v in flags.items()))
    updates = flags["total_timesteps"] // (8 * 32)
    for seen in ranks:
        assert seen["updates"] == updates and seen["parameters_identical"]
    assert [seen["saves"] for seen in ranks] == [1, 0]  # rank 0 alone, once, at the end
    (run_dir,) = os.listdir(tmp_path / "runs")  # one run directory, with one checkpoint and summary
    assert {"ppo.pt", "summary.json"} <= set(os.listdir(tmp_path / "runs" / run_dir))
    two_ranks = ranks[0]["summary"]
    assert two_ranks["global_step"] == flags["total_timesteps"]  # steps of both ranks
    assert ranks[1]["summary"] is None  # rank 0 reports

    one_process = ppo.train(ppo.Args(**flags, runs_dir=str(tmp_path / "one")))
    record_learning(seed, two_ranks_eval_return=two_ranks["eval_return"],
                    one_process_eval_return=one_process["eval_return"])
    # 2 ranks x 4 envs learn what 1 process x 8 envs learns, in as many steps: the greedy action
    # is the shown target in more than 90% of the 20 steps of an episode
    assert two_ranks["eval_return"] > 0.9 * 20 and one_process["eval_return"] > 0.9 * 20


@pytest.mark.learning
@pytest.mark.parametrize("seed", learning_seeds(1))
def test_continuous_ranks_share_their_normalisation_statistics(seed, tmp_path, record_learning):
    """Seeds 1-20 on AMD EPYC and 1-10 on Intel Xeon: --target-kl stopped 2-4 of the 4 updates
    early (at least one asserted); with 1e-4 instead of 1e-5, seed 7 never stopped (AMD)."""
    total = 2048
    ranks = checked_run(tmp_path, "ppo_continuous", "--env-id", "Pendulum-v1", f"--total-timesteps={total}",
                        "--num-envs=2", "--num-steps=256", "--num-minibatches=4", "--update-epochs=4",
                        "--target-kl=0.00001", "--eval-episodes=1", f"--seed={seed}")
    record_learning(seed, updates_stopped_early=ranks[0]["stopped_early"])
    for seen in ranks:
        assert seen["updates"] == total // 512 and seen["parameters_identical"]
        assert seen["stopped_early"] > 0  # --target-kl stopped updates early, all ranks at the same minibatch
        assert seen["merges"] == 2 * total // 512 and seen["statistics_identical"]  # observations and returns
        *_, obs_count, return_count = seen["merged_counts"]
        assert obs_count > total  # every rank's observations, not half of them
        assert return_count == pytest.approx(total + 1e-4)  # a reward per step of either rank, on top of the prior
    assert [seen["saves"] for seen in ranks] == [1, 0]


def test_the_ranks_gradients_are_averaged_into_that_of_the_whole_minibatch(tmp_path):
    import torchrun_update
    result = torchrun(2, os.path.join(TESTS, "torchrun_update.py"), str(tmp_path / "two_ranks.pt"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    two_ranks = torch.load(tmp_path / "two_ranks.pt")
    agent, rollout = torchrun_update.agent_and_rollout()
    before = {key: value.clone() for key, value in agent.state_dict().items()}
    torchrun_update.one_step(agent, rollout, world_size=1)
    for key, value in agent.state_dict().items():
        assert not torch.equal(value, before[key])  # the step moved every parameter
        torch.testing.assert_close(two_ranks[key], value, rtol=1e-5, atol=1e-7)


def test_merged_statistics_equal_those_of_all_the_values_seen_in_one_place():
    rng = np.random.default_rng(0)
    before, one_place = RunningMeanStd(shape=(3,)), RunningMeanStd(shape=(3,))
    for rms in (before, one_place):
        rms.update(np.full((5, 3), 2.0))
    ranks = []
    for scale in (1.0, 10.0):  # each rank starts from `before` and sees different values
        rank_rms = RunningMeanStd(shape=(3,))
        rank_rms.count, rank_rms.mean, rank_rms.var = ppo_continuous.moments(before)
        values = rng.normal(5.0, scale, size=(40, 3))
        rank_rms.update(values)
        one_place.update(values)
        ranks.append(ppo_continuous.moments(rank_rms))
    ppo_continuous.merge_running_stats(before, ppo_continuous.moments(before), ranks)
    assert before.count == pytest.approx(one_place.count)
    np.testing.assert_allclose(before.mean, one_place.mean, rtol=1e-10)
    np.testing.assert_allclose(before.var, one_place.var, rtol=1e-10)


def test_ctrl_c_under_torchrun_saves_once_and_one_process_resumes(tmp_path):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    process = subprocess.Popen([*TORCHRUN, "--nproc-per-node", "2", os.path.join(ROOT, "ppo.py"),
                                "--total-timesteps", "1000000"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    assert process.stdout.readline().startswith("PPO on CartPole-v1")
    time.sleep(2.0)
    os.killpg(process.pid, signal.SIGINT)  # as Ctrl-C in a terminal: to torchrun, which passes it on
    interrupted = time.monotonic()
    stdout, stderr = process.communicate(timeout=60)
    assert time.monotonic() - interrupted < 20  # all ranks stopped; torchrun kills those left after 30 s
    assert "interrupted at step" in stdout and stdout.count("continue with --resume") == 1
    (run_dir,) = os.listdir(tmp_path / "runs")
    checkpoint_path = tmp_path / "runs" / run_dir / "ppo.pt"
    interrupted_at = torch.load(checkpoint_path, weights_only=False)["global_step"]
    assert 0 < interrupted_at < 1_000_000 and interrupted_at % 256 == 0

    target = interrupted_at + 2 * 256  # --num-envs counts all ranks' envs, so one process goes on alike
    result = run_script("ppo.py", "--resume", str(checkpoint_path), "--total-timesteps", str(target),
                        "--eval-episodes", "1", cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert json.load(open(tmp_path / "runs" / run_dir / "summary.json"))["global_step"] == target


def test_a_non_finite_loss_stops_every_rank_and_rank_0_still_reports(tmp_path):
    result = torchrun(2, os.path.join(ROOT, "ppo.py"), "--env-id", "user_envs:NaNReward", "--total-timesteps",
                      "20000", cwd=tmp_path, timeout=120)
    assert result.returncode != 0 and result.stderr.count("ppo.py: error: training stopped") == 1
    (run_dir,) = os.listdir(tmp_path / "runs")
    summary = json.load(open(tmp_path / "runs" / run_dir / "summary.json"))  # written, not cut short by torchrun
    assert summary["failed"] and summary["global_step"] < 20000
    checkpoint = torch.load(tmp_path / summary["checkpoint"], weights_only=False)
    assert all(torch.isfinite(w).all() for w in checkpoint["agent"].values())


TORCHRUN_ENV = {"RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29599"}


@pytest.mark.parametrize("script", ["ppo.py", "ppo_continuous.py"])
def test_world_size_that_does_not_divide_the_envs_gives_one_line_and_exit_status_2(script, tmp_path):
    check_usage_error(script, ["--num-envs", "4"], "--num-envs 4 does not split over 3 processes", tmp_path,
                      env={**TORCHRUN_ENV, "WORLD_SIZE": "3"})


@pytest.mark.parametrize("script", ["ppo.py", "ppo_continuous.py"])
def test_missing_rendezvous_gives_one_line_and_exit_status_2(script, tmp_path):
    check_usage_error(script, [], "MASTER_ADDR, MASTER_PORT not set: start several processes with torchrun",
                      tmp_path, env={"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"})


def test_bad_world_size_under_torchrun_is_reported_once(tmp_path):
    result = torchrun(3, os.path.join(ROOT, "ppo.py"), "--num-envs", "8", cwd=tmp_path, timeout=60)
    assert result.returncode != 0  # torchrun itself then reports the failed ranks
    assert result.stderr.count("ppo.py: error: --num-envs 8 does not split over 3 processes") == 1
    assert "exitcode  : 2" in result.stderr
    assert not os.path.exists(tmp_path / "runs")
