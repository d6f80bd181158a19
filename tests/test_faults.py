"""Faults a long run survives: SIGTERM, a process killed outright, a damaged checkpoint, a full disk.

The code that does it is the plumbing every script shares (StopOnSignal, Run.save, write_atomically,
checkpoint_file), copied alike into each (test_ladder.py); SIGTERM is tried on every script, the
rest on a2c.py.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import a2c
from conftest import ROOT, TESTS, check_usage_error, read_scalars, run_script

# Each script on a quick env, with the first words of the line it prints when training starts.
QUICK = {
    "reinforce.py": (["--batch-steps", "500"], "reinforce on CartPole-v1"),
    "reinforce_baseline.py": (["--batch-steps", "500"], "reinforce_baseline on CartPole-v1"),
    "a2c.py": ([], "A2C on CartPole-v1"),
    "trpo.py": (["--num-steps", "128"], "TRPO on CartPole-v1"),
    "ppo.py": ([], "PPO on CartPole-v1"),
    "ppo_continuous.py": (["--env-id", "Pendulum-v1", "--num-steps", "256", "--num-minibatches", "4"],
                          "PPO on Pendulum-v1"),
}


def start(script: str, *flags: str, cwd) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=TESTS, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, os.path.join(ROOT, script), *flags], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def only_run_dir(tmp_path) -> str:
    (run_dir,) = os.listdir(tmp_path / "runs")
    return str(tmp_path / "runs" / run_dir)


# SIGTERM is handled by StopOnSignal and the exit status by the same lines of __main__ in every
# script (tests/test_ladder.py keeps the helper's copies identical): three scripts stand for six,
# one of each loop (whole episodes, rollouts, PPO's torchrun-ready exit).
@pytest.mark.parametrize("script", ["reinforce.py", "a2c.py", "ppo_continuous.py"])
def test_sigterm_saves_a_checkpoint_and_summary_exits_143_and_resume_finishes(script, tmp_path):
    flags, first_line = QUICK[script]
    process = start(script, *flags, "--total-timesteps", "10000000", cwd=tmp_path)
    assert process.stdout.readline().startswith(first_line)
    time.sleep(1.0)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 143, stderr  # 128 + 15, as for a process SIGTERM killed
    assert "Traceback" not in stderr and "SIGTERM: stopping after this update" in stdout
    run_dir = only_run_dir(tmp_path)
    summary = json.load(open(os.path.join(run_dir, "summary.json")))
    assert summary["interrupted"] and summary["signal"] == "SIGTERM" and not summary["in_progress"]
    assert f"continue with --resume {summary['checkpoint']}" in stdout  # relative to where it ran
    step = torch.load(tmp_path / summary["checkpoint"], weights_only=False)["global_step"]
    assert 0 < step == summary["global_step"]

    result = run_script(script, "--resume", run_dir, "--total-timesteps", str(step + 1000), "--eval-episodes", "1",
                        cwd=str(tmp_path))  # the run directory, not the file: its newest checkpoint
    assert result.returncode == 0, result.stderr
    summary = json.load(open(os.path.join(run_dir, "summary.json")))
    assert summary["global_step"] >= step + 1000 and not summary["interrupted"] and summary["signal"] is None


def test_a_run_killed_outright_goes_on_from_its_last_periodic_checkpoint(tmp_path):
    process = start("a2c.py", "--total-timesteps", "10000000", "--checkpoint-every", "0.5", cwd=tmp_path)
    assert process.stdout.readline().startswith("A2C on CartPole-v1")
    deadline = time.monotonic() + 60
    while not (tmp_path / "runs").exists() or not os.path.exists(os.path.join(only_run_dir(tmp_path), "a2c.pt")):
        assert time.monotonic() < deadline, "no periodic checkpoint"
        time.sleep(0.1)
    time.sleep(1.0)  # a save or two more, and kill -9 may well fall in the middle of one
    process.kill()
    process.communicate(timeout=60)
    run_dir = only_run_dir(tmp_path)  # a half-written .tmp may be left there, never read
    summary = json.load(open(os.path.join(run_dir, "summary.json")))
    assert summary["in_progress"] and summary["interrupted"]  # what benchmark/run.py resumes
    saved = torch.load(os.path.join(run_dir, "a2c.pt"), weights_only=False)["global_step"]
    assert saved > 0

    result = run_script("a2c.py", "--resume", run_dir, "--total-timesteps", str(saved + 2000), "--eval-episodes", "1",
                        cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr
    summary = json.load(open(os.path.join(run_dir, "summary.json")))
    assert summary["global_step"] == saved + 2000 and not summary["in_progress"] and not summary["interrupted"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> str:
    runs = tmp_path_factory.mktemp("runs")
    return a2c.train(a2c.Args(total_timesteps=400, runs_dir=str(runs), eval_episodes=1))["run_dir"]


def test_a_damaged_checkpoint_is_refused_in_one_line(finished_run, tmp_path):
    with open(os.path.join(finished_run, "a2c.pt"), "rb") as f:
        whole = f.read()
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(whole[:len(whole) // 2])
    check_usage_error("a2c.py", ["--resume", str(damaged), "--total-timesteps", "800"], "is not a whole checkpoint",
                      tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    check_usage_error("a2c.py", ["--resume", str(empty)], "holds no checkpoint", tmp_path)


def test_a_full_disk_stops_the_run_in_one_line_and_keeps_the_last_checkpoint(finished_run, tmp_path):
    path = os.path.join(finished_run, "a2c.pt")
    with open(path, "rb") as f:
        before = f.read()
    env = dict(os.environ, PYTHONPATH=TESTS)
    result = subprocess.run([sys.executable, os.path.join(TESTS, "full_disk.py"), "a2c.py", "--resume", finished_run,
                             "--total-timesteps", "800", "--eval-episodes", "1"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines() == [f"a2c.py: error: cannot write {path}: No space left on device"]
    with open(path, "rb") as f:
        assert f.read() == before  # the checkpoint before is whole, and still the newest
    assert not os.path.exists(path + ".tmp")


def test_a_runs_directory_that_cannot_be_made_is_one_line_and_exit_status_2(tmp_path):
    """Found before training starts, so a usage error (exit status 2), as issue 20 asks."""
    (tmp_path / "a_file").write_text("not a directory")
    result = run_script("a2c.py", "--runs-dir", str(tmp_path / "a_file" / "runs"), cwd=str(tmp_path))
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "cannot make the run directory" in result.stderr


def test_periodic_checkpoints_do_not_change_what_the_algorithm_computes(tmp_path):
    def returns(every: float, name: str) -> list[float]:
        summary = a2c.train(a2c.Args(total_timesteps=4000, checkpoint_every=every, runs_dir=str(tmp_path / name),
                                     eval_episodes=1))
        return [value for _, value in read_scalars(summary["run_dir"], "charts/episodic_return")]
    assert returns(1e-9, "every_update") == returns(0.0, "at_the_end_only")
