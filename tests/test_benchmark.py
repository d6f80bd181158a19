"""benchmark/run.py and benchmark/report.py: the smoke suite end to end, then the report on its runs."""

import csv
import glob
import importlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
import tomllib

import numpy as np
import pytest
import torch

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "benchmark"))
import report  # noqa: E402
import run  # noqa: E402
from rliable import metrics  # noqa: E402

FAILING_JOB = ("trpo", "NoSuchEnv-v0")  # added to the smoke suite: the script refuses the env (exit 2)


def bench(tool: str, *flags: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, os.path.join(ROOT, "benchmark", tool), *flags], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


def write_config(path, tables: dict) -> None:
    """A TOML file of [suite] / [suite."script"."env"] tables (values: ints, floats, bools, strings)."""
    lines = []
    for suite, contents in tables.items():
        lines += [f"[{suite}]", f"seeds = {contents['seeds']}"]
        for script, envs in contents.items():
            if script == "seeds":
                continue
            for env_id, flags in envs.items():
                lines.append(f'[{suite}."{script}"."{env_id}"]')
                lines += [f"{key} = {json.dumps(value)}" for key, value in flags.items()]
    path.write_text("\n".join(lines) + "\n")


def job_summaries(runs_dir: str, suite: str = "smoke") -> dict:
    """{(script, env_id, seed): (summary.json path, its contents)} of the runs under runs_dir."""
    found = {}
    for path in glob.glob(os.path.join(runs_dir, suite, "*", "*", "seed_*", "*", "summary.json")):
        with open(path) as f:
            summary = json.load(f)
        found[(path.split(os.sep)[-5], summary["env_id"], summary["seed"])] = (path, summary)
    return found


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """The smoke suite of benchmark/zoo.toml plus a job that fails, run once, then run again."""
    folder = tmp_path_factory.mktemp("bench")
    with open(os.path.join(ROOT, "benchmark", "zoo.toml"), "rb") as f:
        suite = tomllib.load(f)["smoke"]
    jobs = {script: envs for script, envs in suite.items() if isinstance(envs, dict)}
    assert sum(len(envs) for envs in jobs.values()) * len(suite["seeds"]) == 2  # two tiny jobs
    suite.setdefault(FAILING_JOB[0], {})[FAILING_JOB[1]] = {"total_timesteps": 100}
    config = folder / "zoo.toml"
    write_config(config, {"smoke": suite})
    runs_dir = str(folder / "runs")
    flags = ("--suite", "smoke", "--config", str(config), "--runs-dir", runs_dir, "--jobs", "2")
    first = bench("run.py", *flags)
    summaries = job_summaries(runs_dir)
    stamps = {key: os.stat(path).st_mtime_ns for key, (path, _) in summaries.items()}
    second = bench("run.py", *flags)
    return {"first": first, "second": second, "runs_dir": runs_dir, "summaries": summaries, "stamps": stamps,
            "folder": folder, "flags": flags}


def test_runner_runs_the_smoke_jobs_and_reports_the_failure(smoke):
    first = smoke["first"]
    assert first.returncode == 1, first.stdout + first.stderr  # a job failed: the runner says so in its status
    assert set(smoke["summaries"]) == {("ppo", "CartPole-v1", 1), ("a2c", "CartPole-v1", 1)}
    for path, summary in smoke["summaries"].values():
        assert summary["global_step"] >= summary["args"]["total_timesteps"] and not summary["interrupted"]
        assert os.path.exists(os.path.join(os.path.dirname(os.path.dirname(path)), "log.txt"))
    assert "done    ppo CartPole-v1 seed 1" in first.stdout and "done    a2c CartPole-v1 seed 1" in first.stdout
    # The failure: named, with its exit status and the end of its log (the script's own error line).
    assert "FAILED  trpo NoSuchEnv-v0 seed 1 (exit status 2)" in first.stdout
    assert "trpo.py: error:" in first.stdout and "NoSuchEnv-v0" in first.stdout
    assert "3 done (1 failed), 0 running, 0 left" in first.stdout
    assert "1 of 3 jobs failed: trpo NoSuchEnv-v0 seed 1" in first.stdout


def test_rerun_skips_finished_jobs_and_retries_the_failed_one(smoke):
    second = smoke["second"]
    assert "3 jobs, 2 already finished, 1 to run" in second.stdout
    assert "done    ppo" not in second.stdout and "done    a2c" not in second.stdout
    assert "FAILED  trpo NoSuchEnv-v0 seed 1" in second.stdout and second.returncode == 1
    for key, (path, _) in smoke["summaries"].items():
        assert os.stat(path).st_mtime_ns == smoke["stamps"][key]  # untouched


def test_ctrl_c_stops_the_runner_and_a_rerun_resumes_the_job(tmp_path):
    """Ctrl-C reaches the runner and its jobs: the job saves a checkpoint, the runner says how to go on
    (exit 130), and the same command then resumes the job from the checkpoint in the same folder."""
    config = tmp_path / "zoo.toml"
    write_config(config, {"smoke": {"seeds": [4], "ppo": {"CartPole-v1": {"total_timesteps": 30_000,
                                                                          "eval_episodes": 1}}}})
    flags = ("--suite", "smoke", "--config", str(config), "--runs-dir", str(tmp_path / "runs"))
    runner = subprocess.Popen([sys.executable, os.path.join(ROOT, "benchmark", "run.py"), *flags], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    log = tmp_path / "runs" / "smoke" / "ppo" / "CartPole-v1" / "seed_4" / "log.txt"
    deadline = time.time() + 60
    while not (log.exists() and "logging to" in log.read_text()) and time.time() < deadline:
        time.sleep(0.05)  # until the job has begun training (it prints this line once its Ctrl-C handler is set)
    os.kill(runner.pid, signal.SIGINT)  # Ctrl-C: the jobs have sessions of their own, so the runner passes it on
    _, stderr = runner.communicate(timeout=60)
    assert runner.returncode == 130 and "run the same command again to go on" in stderr
    ((path, summary),) = job_summaries(str(tmp_path / "runs")).values()
    assert summary["interrupted"] and os.path.exists(summary["checkpoint"])
    assert summary["global_step"] < 30_000
    again = bench("run.py", *flags)
    assert again.returncode == 0 and "1 jobs, 0 already finished, 1 to run" in again.stdout
    ((new_path, new_summary),) = job_summaries(str(tmp_path / "runs")).values()
    assert new_path == path and not new_summary["interrupted"] and new_summary["global_step"] >= 30_000
    commands = [line for line in log.read_text().splitlines() if line.startswith("$ ")]
    assert len(commands) == 2 and commands[1].endswith(f"--resume {summary['checkpoint']}")


def test_relative_runs_dir_changed_settings_and_a_run_without_episodes(tmp_path):
    """From another folder, a relative --runs-dir is taken from there; a job that ends before any
    episode does (no training return) counts as done; and a job whose settings changed in the
    config runs again rather than being skipped."""
    config = tmp_path / "zoo.toml"
    job = {"total_timesteps": 40, "eval_episodes": 1}  # 8 envs x 5 steps: no 200-step episode ends
    write_config(config, {"smoke": {"seeds": [1], "a2c": {"Pendulum-v1": job}}})
    command = [sys.executable, os.path.join(ROOT, "benchmark", "run.py"), "--suite", "smoke", "--config", "zoo.toml",
               "--runs-dir", "runs"]
    first = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "done    a2c Pendulum-v1 seed 1: eval return" in first.stdout and "training none" in first.stdout
    ((path, summary),) = job_summaries(str(tmp_path / "runs")).values()
    assert summary["final_return"] is None
    write_config(config, {"smoke": {"seeds": [1], "a2c": {"Pendulum-v1": {**job, "total_timesteps": 80}}}})
    second = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0 and "0 already finished, 1 to run" in second.stdout
    ((_, summary),) = job_summaries(str(tmp_path / "runs")).values()
    assert summary["global_step"] == 80


def fake_run(script: str, seed: int, eval_return: float, steps_to_threshold=None) -> dict:
    return {"script": script, "env_id": "CartPole-v1", "seed": seed, "global_step": 1000, "final_return": eval_return - 1,
            "eval_return": eval_return, "reward_threshold": 475.0, "steps_to_threshold": steps_to_threshold,
            "seconds_to_threshold": None if steps_to_threshold is None else steps_to_threshold / 100, "sps": 100.0 * seed}


def test_env_table_statistics_over_seeds():
    runs = ([fake_run("ppo", seed, value, steps) for seed, value, steps in [(1, 100.0, 300), (2, 200.0, None), (3, 600.0, 500)]]
            + [fake_run("a2c", seed, float(value)) for seed, value in enumerate([10, 20, 30, 40, 1000], start=1)])
    table = "\n".join(report.env_table("CartPole-v1", runs, peers=[]))
    # ppo: mean 300, population std sqrt(((-200)² + (-100)² + 300²) / 3) = 216.0; threshold on 2 of 3 seeds
    assert "| ppo.py | 3 | 299.0 ± 216.0 | 300.0 ± 216.0 | 400.0 ± 100.0 (2/3) | 4.0 ± 1.0 s (2/3) | 200.0 ± 81.6 | needs 5 seeds |" in table
    assert "| a2c.py | 5 | 219.0 ± 390.1 | 220.0 ± 390.1 | not reached (0/5) | not reached (0/5) |" in table
    # a2c, 5 seeds: the IQM drops one seed at each end (mean of 20, 30, 40) and comes with an interval
    row = next(line for line in table.splitlines() if line.startswith("| a2c.py"))
    iqm, interval = row.split("|")[-2].strip().split(" ", 1)
    low, high = (float(x) for x in interval.strip("[]").split(", "))
    assert iqm == "30.0" and 10 <= low < 30 < high <= 1000
    assert table.index("| a2c.py") < table.index("| ppo.py")  # the ladder's order
    one_hit = [fake_run("trpo", 1, 500.0, 4000), fake_run("trpo", 2, 100.0)]
    assert "| 4,000 (1/2) | 40.0 s (1/2) |" in "\n".join(report.env_table("CartPole-v1", one_hit, peers=[]))
    no_threshold = [{**run, "reward_threshold": None} for run in one_hit]
    assert "| no threshold | no threshold |" in "\n".join(report.env_table("CartPole-v1", no_threshold, peers=[]))
    peer = {"env": "CartPole-v0", "result": "1", "what": "w", "budget": 1, "seeds": 1, "source": "s"}
    peers = [{**peer, "who": "A trpo", "algorithm": "trpo"}, {**peer, "who": "A ddpg", "algorithm": "ddpg"}]
    table = "\n".join(report.env_table("CartPole-v1", one_hit + [fake_run("ddpg@td3", 1, 5.0)], peers))
    assert "| A trpo | CartPole-v0 |" in table and "| A ddpg |" in table  # a variant's peers are its script's
    table = "\n".join(report.env_table("CartPole-v1", one_hit, peers))
    assert "| A trpo |" in table and "A ddpg" not in table  # only the peers of the scripts in the table


def test_speed_table_ratios_say_how_many_times_better_ours_is(tmp_path):
    def runs(sps, steps):
        return [{"seed": s, "steps_to_threshold": steps, "seconds_to_threshold": None if steps is None else steps / sps,
                 "sps": sps, "peak_rss_mib": 300.0} for s in (1, 2, 3)]
    for name, ours, peer in (("a2c_CartPole-v1", runs(4000.0, 20_000), runs(2000.0, 60_000)),
                             ("trpo_CartPole-v1", runs(1000.0, None), runs(2000.0, 50_000))):
        with open(tmp_path / f"{name}.json", "w") as f:
            json.dump({"script": name.split("_")[0] + ".py", "env_id": "CartPole-v1", "runs": ours,
                       "peer": "SB3", "peer_runs": peer}, f)
    text = open(report.write_speed_table(str(tmp_path))).read()
    rows = [line for line in text.splitlines() if "ours better by" in line]
    assert rows[0] == "| | | ours better by | **3.00x** | **6.00x** | **2.00x** | **1.00x** |"  # a2c: 3x fewer steps, 2x the speed
    assert rows[1] == "| | | ours better by | SB3 alone reached it | SB3 alone reached it | 0.50x | **1.00x** |"  # trpo
    assert text.index("| a2c.py") < text.index("| trpo.py")


def test_sb3_counterparts_get_our_settings():
    """The SB3 models benchmark/speed.py times against: built (not trained) from our scripts' defaults."""
    import dataclasses
    import importlib

    import sb3_train
    from stable_baselines3.common.env_util import make_vec_env
    for script in ("ppo", "a2c", "trpo"):
        args = dataclasses.asdict(importlib.import_module(script).Args(anneal_lr=True) if script != "trpo"
                                  else importlib.import_module(script).Args())
        env = make_vec_env("CartPole-v1", n_envs=args["num_envs"])
        model = sb3_train.make_model(script, args, env)
        assert model.n_steps == args["num_steps"] and model.n_envs == args["num_envs"]
        assert model.gamma == args["gamma"] and model.gae_lambda == args["gae_lambda"]
        assert [m.out_features for m in model.policy.mlp_extractor.policy_net if hasattr(m, "out_features")] == [64, 64]
        if script == "ppo":
            assert model.batch_size == args["num_envs"] * args["num_steps"] // args["num_minibatches"]
            assert model.n_epochs == args["update_epochs"] and model.vf_coef == args["vf_coef"] / 2
        if script == "a2c":
            assert isinstance(model.policy.optimizer, torch.optim.RMSprop) and model.vf_coef == args["vf_coef"] / 2
        if script == "trpo":
            assert model.target_kl == args["max_kl"] and model.cg_max_steps == args["cg_iters"]
            assert model.n_critic_updates == args["critic_epochs"]
        else:  # our annealing: update i of n gets lr0 (1 - i/n); SB3 asks after each rollout with the steps left
            batch, n = args["num_envs"] * args["num_steps"], math.ceil(args["total_timesteps"] / args["num_envs"] / args["num_steps"])
            for i in (0, 1, n - 1):
                progress = 1 - (i + 1) * batch / args["total_timesteps"]
                assert model.lr_schedule(progress) == pytest.approx(args["learning_rate"] * (1 - i / n))


def test_sb3_ddpg_and_td3_get_our_settings():
    """ddpg.py's SB3 counterpart is SB3's TD3 with our switches: with them off, its DDPG (one critic, no
    delay, no target noise); the networks, rates, buffer, noise (in the [-1, 1] action space, OU with
    dt 1 so that it is ours, x <- x - θx + σε) are our run's."""
    import dataclasses

    import ddpg
    import sb3_train
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.noise import NormalActionNoise, OrnsteinUhlenbeckActionNoise
    env = make_vec_env("Pendulum-v1", n_envs=1)
    args = dataclasses.asdict(ddpg.Args())
    model = sb3_train.make_model("ddpg", args, env)
    assert sb3_train.peer_name("ddpg", args) == "stable-baselines3 DDPG"
    assert len(model.critic.q_networks) == 1 and model.policy_delay == 1 and model.target_policy_noise == 0
    assert [m.out_features for m in model.actor.mu if hasattr(m, "out_features")] == [256, 256, 1]
    assert [m.out_features for m in model.critic.q_networks[0] if hasattr(m, "out_features")] == [256, 256, 1]
    assert (model.learning_rate, model.buffer_size, model.batch_size, model.tau, model.gamma, model.learning_starts) == (
        args["learning_rate"], args["buffer_size"], args["batch_size"], args["tau"], args["gamma"], args["learning_starts"])
    assert model.train_freq.frequency == 1 and model.gradient_steps == 1
    assert isinstance(model.action_noise, NormalActionNoise) and np.allclose(model.action_noise._sigma, 0.1)
    td3 = {**args, "twin_q": True, "policy_frequency": 2, "target_noise": 0.2, "noise": "ou", "hidden_size": 64}
    model = sb3_train.make_model("ddpg", td3, env)
    assert sb3_train.peer_name("ddpg", td3) == "stable-baselines3 TD3"
    assert len(model.critic.q_networks) == 2 and model.policy_delay == 2 and model.target_policy_noise == 0.2
    assert [m.out_features for m in model.actor.mu if hasattr(m, "out_features")] == [64, 64, 1]
    noise = model.action_noise
    assert isinstance(noise, OrnsteinUhlenbeckActionNoise) and noise._dt == 1.0 and noise._theta == args["ou_theta"]
    noise.reset()
    np.random.seed(0)
    first = noise()
    np.random.seed(1)
    expected = first - args["ou_theta"] * first + 0.1 * np.random.normal(size=1)
    np.random.seed(1)
    assert np.allclose(noise(), expected)  # x <- x - θx + σε


def test_report_tables_and_plot_match_the_runs(smoke, tmp_path):
    result = bench("report.py", "--suite", "smoke", "--runs-dir", smoke["runs_dir"], "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    out = tmp_path / "smoke"
    with open(out / "runs.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2  # the failed job has no run to report
    for row in rows:
        _, summary = smoke["summaries"][(row["script"], row["env_id"], int(row["seed"]))]
        for key in ("global_step", "final_return", "eval_return", "eval_return_std", "sps", "wall_seconds"):
            assert float(row[key]) == pytest.approx(summary[key], rel=1e-12), key
        assert (row["steps_to_threshold"] or None) == summary["steps_to_threshold"]
    table = (out / "results.md").read_text()
    for script in ("ppo", "a2c"):
        _, summary = smoke["summaries"][(script, "CartPole-v1", 1)]
        # one seed: the mean is that run's number, the std 0; too few seeds for an IQM
        assert (f"| {script}.py | 1 | {report.number(summary['final_return'])} ± 0.0 | "
                f"{report.number(summary['eval_return'])} ± 0.0 | not reached (0/1) | not reached (0/1) | "
                f"{report.number(summary['sps'])} ± 0.0 | needs 5 seeds |") in table
    assert "CleanRL ppo.py | CartPole-v1 | 490.0 ± 6.1" in table  # the peer for this env, with its source
    assert "Acrobot" not in table  # and only for this env
    import matplotlib.image
    image = matplotlib.image.imread(out / "curves.png")
    assert image.shape[0] > 100 and image.shape[1] > 100 and image.std() > 0  # a picture, not a blank


def test_report_records_outlive_the_runs_and_may_lack_a_curve(smoke, tmp_path):
    """--records keeps each run's numbers and curve under <out>/<suite>/records/ and reports every record
    there: a later report without the runs gives the same tables, and a record whose curve was not kept
    (a run folder lost before records were kept) is in the tables but not in the figure."""
    flags = ("report.py", "--suite", "smoke", "--out", str(tmp_path), "--records")
    assert bench(*flags, "--runs-dir", smoke["runs_dir"]).returncode == 0
    out = tmp_path / "smoke"
    records = sorted(glob.glob(str(out / "records" / "*" / "CartPole-v1" / "seed_*.json")))
    assert len(records) == 2
    with open(records[0]) as f:
        record = json.load(f)
    assert len(record["curve"]) == report.CURVE_POINTS
    csv_before = (out / "runs.csv").read_text()
    lost = {**record, "seed": 7, "final_return": 123.0, "curve": None, "curve_steps": None}
    with open(os.path.join(os.path.dirname(records[0]), "seed_7.json"), "w") as f:
        json.dump(lost, f)
    again = bench(*flags, "--runs-dir", str(tmp_path / "no_runs"))
    assert again.returncode == 0, again.stderr
    with open(out / "runs.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and {(r["script"], r["seed"], r["final_return"]) for r in rows if r["seed"] == "7"} == {
        (record["script"], "7", "123.0")}
    assert [line for line in (out / "runs.csv").read_text().splitlines() if ",7," not in line] == csv_before.splitlines()
    runs = report.keep_records([], str(out / "records"))
    import matplotlib.pyplot as plt
    drawn = []
    real_plot = plt.Axes.plot
    plt.Axes.plot = lambda axis, x, y, **kw: drawn.append(kw["label"]) or real_plot(axis, x, y, **kw)
    try:
        report.plot_curves(runs, "smoke", str(tmp_path / "curves.png"))
    finally:
        plt.Axes.plot = real_plot
    counts = {label.rsplit(" (", 1)[0]: label.rsplit(" (", 1)[1] for label in drawn}
    assert counts == {"ppo.py": "1)", "a2c.py": "1)"}  # the record without a curve is not drawn


def test_steps_to_a_given_threshold_are_read_from_the_episodes():
    """--thresholds: the first episode end at which the mean of the last 20 reaches it, as the scripts
    check their own threshold; never with fewer than 20 episodes; a bad pair is refused."""
    steps = np.arange(1, 61) * 200.0  # 60 episodes of 200 steps
    returns = np.full(60, -1000.0)
    returns[25:] = -100.0  # from episode 26 on; the last 20 at episode k hold 45 - k of the first kind
    assert report.steps_to(steps, returns, -200.0) == 43 * 200  # k = 43: (2·-1000 + 18·-100) / 20 = -190
    assert report.steps_to(steps, returns, -99.0) is None  # never
    assert report.steps_to(steps[:19], np.zeros(19), -200.0) is None  # fewer than 20 episodes
    shuffled = np.random.default_rng(0).permutation(60)
    assert report.steps_to(steps[shuffled], returns[shuffled], -200.0) == 43 * 200  # ordered by step first
    assert report.parse_thresholds(["Pendulum-v1=-200", "my_pkg.envs:Env-v0=3.5"]) == {
        "Pendulum-v1": -200.0, "my_pkg.envs:Env-v0": 3.5}
    for bad in ("Pendulum-v1", "=-200", "Pendulum-v1=low"):
        with pytest.raises(report.UsageError, match="ENV=VALUE"):
            report.parse_thresholds([bad])


def test_learning_curve_is_the_running_mean_of_the_last_20_episodes():
    steps = np.array([10.0, 20.0, 30.0])
    curve = report.learning_curve(steps, np.array([1.0, 2.0, 3.0]), np.array([5.0, 10.0, 25.0, 100.0]))
    assert np.isnan(curve[0]) and curve[1:].tolist() == [1.0, 1.5, 2.0]
    steps, returns = np.arange(1.0, 26.0), np.arange(25.0)
    assert report.learning_curve(steps, returns, np.array([25.0]))[0] == np.mean(np.arange(5.0, 25.0))
    shuffled = np.random.default_rng(0).permutation(25)  # episodes logged out of order by parallel envs
    assert report.learning_curve(steps[shuffled], returns[shuffled], np.array([25.0]))[0] == 14.5


def test_interval_is_rliables_seeded_stratified_bootstrap():
    column = lambda *values: np.array(values, dtype=np.float64)[:, None]  # runs x 1 task
    assert report.interval(column(8, 1, 2, 3, 4, 5, 6, 7), metrics.aggregate_iqm)[0] == 4.5  # mean of 3..6
    assert report.interval(column(1, 2, 3, 1000), metrics.aggregate_iqm)[0] == 2.5  # the outlier is trimmed
    assert report.interval(column(1, 2, 6), metrics.aggregate_iqm)[0] == 3.0  # fewer than 4 runs: the plain mean
    point, low, high = report.interval(column(0, 1, 2, 3, 10), metrics.aggregate_iqm)
    assert 0.0 <= low < point < high <= 10.0
    for _ in range(5):  # seeded (rliable draws from numpy's global generator, whatever its random_state says)
        np.random.seed(None)
        assert report.interval(column(0, 1, 2, 3, 10), metrics.aggregate_iqm) == (point, low, high)
    assert report.interval(column(5, 5), np.mean) == (5.0, 5.0, 5.0)
    # Stratified: resampling runs within each task keeps each task's values, so a task scoring 0 on every run
    # and one scoring 1 on every run give a mean of 0.5 in every resample (across tasks it would not).
    assert report.interval(np.array([[0.0, 1.0]] * 4), metrics.aggregate_mean) == (0.5, 0.5, 0.5)


def test_normalise_makes_random_0_and_the_best_settings_mean_1():
    scores = {("a", "E"): [10.0, 30.0], ("b", "E"): [0.0, 10.0], ("a", "F"): [-10.0, -10.0], ("b", "F"): [50.0, 70.0]}
    normalised = report.normalise(scores, {"E": 0.0, "F": -40.0})
    assert normalised[("a", "E")] == [0.5, 1.5] and normalised[("b", "E")] == [0.0, 0.5]  # best: a's mean, 20
    assert normalised[("b", "F")] == [0.9, 1.1] and normalised[("a", "F")] == [0.3, 0.3]  # (x + 40) / (60 + 40)
    matrices, tasks = report.score_matrices({**normalised, ("a", "G"): [1.0, 1.0]})
    assert tasks == ["E", "F"]  # G left out: b has no run of it
    assert matrices["a"].tolist() == [[0.5, 0.3], [1.5, 0.3]]  # runs x tasks, as rliable takes them


def test_normalised_scores_refuse_what_cannot_be_normalised(tmp_path):
    with pytest.raises(report.UsageError, match="on E no setting scores above the random policy"):
        report.normalise({("a", "E"): [1.0, 2.0], ("b", "E"): [0.0, 1.0]}, {"E": 5.0})
    # tasks with 3 seeds and with 2: every task keeps the first 2, so each setting's matrix is 2 x 2
    matrices, tasks = report.score_matrices({("a", "E"): [1.0, 2.0, 3.0], ("b", "E"): [4.0, 5.0, 6.0],
                                             ("a", "F"): [7.0, 8.0], ("b", "F"): [9.0, 10.0]})
    assert tasks == ["E", "F"] and matrices["b"].tolist() == [[4.0, 9.0], [5.0, 10.0]]
    with pytest.raises(report.UsageError, match="no task has runs of every setting"):
        report.score_matrices({("a", "E"): [1.0], ("b", "F"): [2.0]})
    record = lambda label, seed, score, **args: {"script": label, "env_id": "E", "seed": seed, "global_step": 100,
                                                 "last_100_return": score, "args": {"seed": seed, "lr": 1.0, **args}}
    runs = [record("a", 1, 10.0), record("a", 2, 20.0), record("b", 1, 5.0), record("b", 2, 15.0),
            record("b", 3, None), record("a@sb3", 1, 100.0)]  # b seed 3 ended no episode; SB3's run is no setting
    partial = {**record("a", 1, -50.0), "env_id": "F"}  # a task only a has run, below its random score: not normalised
    report.write_normalised(runs + [partial], {"E": 0.0, "F": 0.0}, "t", str(tmp_path))
    table = (tmp_path / "normalised.md").read_text()
    assert "Left out, no episode ended: b.py on E, seed 3." in table and "SB3" not in table
    assert "| a.py | 1.00 | " in table and "| b.py | 0.67 | " in table  # best: a's mean, 15
    assert "Left out, not run with every setting: F." in table
    assert "| a.py | F | -50.0 | 0.0 | – (not every setting has run this task) |" in table
    with pytest.raises(report.UsageError, match="runs of a on E were made with different settings"):
        report.write_normalised(runs[:1] + [record("a", 2, 20.0, lr=2.0)] + runs[2:4], {"E": 0.0}, "t", str(tmp_path))


def test_last_100_episodes_by_step(tmp_path):
    from torch.utils.tensorboard import SummaryWriter
    writer = SummaryWriter(str(tmp_path))
    for i in np.random.default_rng(0).permutation(150):  # episodes logged out of order by parallel envs
        writer.add_scalar("charts/episodic_return", float(i), int(i) * 10)
    writer.close()
    assert report.last_episodes_mean(str(tmp_path)) == np.mean(np.arange(50.0, 150.0))


def test_flags_from_config_values():
    assert run.as_flags({"learning_rate": 3e-4, "norm_obs": False, "anneal_lr": True, "num_envs": 4}) == [
        "--learning-rate", "0.0003", "--no-norm-obs", "--anneal-lr", "--num-envs", "4"]


def test_every_job_of_the_config_names_real_flags():
    """Each table of zoo.toml uses only fields of its script's Args, so no job dies on a typo."""
    import importlib
    with open(os.path.join(ROOT, "benchmark", "zoo.toml"), "rb") as f:
        config = tomllib.load(f)
    for suite in config.values():
        for label, envs in suite.items():
            if isinstance(envs, dict):
                script = label.split("@")[0]  # a variant: "<script>@<variant>"
                fields = importlib.import_module(script).Args.__dataclass_fields__
                for env_id, flags in envs.items():
                    flags = {key: value for key, value in flags.items() if key != "ablation"}  # ablate.py's
                    assert set(flags) <= set(fields), (label, env_id, set(flags) - set(fields))
                    assert "total_timesteps" in flags, (label, env_id)  # the budget is always stated


@pytest.mark.parametrize("flags, message", [
    (["--suite", "nope"], "no suite 'nope'"),
    (["--suite", "smoke", "--scripts", "ppox"], "has no script ppox"),
    (["--suite", "smoke", "--envs", "Pong-v5"], "has no env Pong-v5"),
    (["--suite", "smoke", "--jobs", "0"], "--jobs must be at least 1"),
    (["--config", "/nonexistent.toml"], "cannot read the config"),
])
def test_runner_bad_selection_is_one_line_and_exit_2(flags, message, tmp_path):
    result = bench("run.py", *flags, "--runs-dir", str(tmp_path / "runs"))
    assert result.returncode == 2 and result.stderr.startswith("run.py: error:") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not os.path.exists(tmp_path / "runs")


def test_report_without_runs_says_what_to_do(tmp_path):
    result = bench("report.py", "--suite", "smoke", "--runs-dir", str(tmp_path), "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and "run python benchmark/run.py --suite smoke first" in result.stderr


def test_variants_run_as_scripts_of_their_own_and_report_normalised_scores(tmp_path):
    """Tables "ppo@clip" and "ppo@plain" run ppo.py with their own flags, in folders of their own; the
    report scores them as the PPO paper's Table 1 does, from records that outlive the runs."""
    config, runs_dir, out = tmp_path / "zoo.toml", str(tmp_path / "runs"), tmp_path / "out"
    job = {"total_timesteps": 2048, "eval_episodes": 1}
    write_config(config, {"tiny": {"seeds": [1, 2], "ppo@clip": {"CartPole-v1": {**job, "objective": "clip"}},
                                   "ppo@plain": {"CartPole-v1": {**job, "objective": "plain"}}}})
    flags = ("--suite", "tiny", "--config", str(config), "--runs-dir", runs_dir)
    only_plain = bench("run.py", *flags, "--scripts", "ppo@plain", "--dry-run")
    assert "2 jobs" in only_plain.stdout and "ppo@plain CartPole-v1 seed 2  --total-timesteps 2048" in only_plain.stdout
    versus = bench("run.py", *flags, "--dry-run", "--versus-sb3", "--seeds", "1").stdout  # SB3 beside each setting
    assert [line.split()[2] for line in versus.splitlines()[1:]] == ["ppo@clip", "ppo@clip@sb3", "ppo@plain",
                                                                     "ppo@plain@sb3"]
    result = bench("run.py", *flags, "--jobs", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "done    ppo@plain CartPole-v1 seed 2" in result.stdout
    summaries = job_summaries(runs_dir, "tiny")
    assert {(label, summary["args"]["objective"]) for (label, _, _), (_, summary) in summaries.items()} == {
        ("ppo@clip", "clip"), ("ppo@plain", "plain")}
    random_scores = tmp_path / "random.json"
    random_scores.write_text(json.dumps({"scores": {"CartPole-v1": {"mean": 10.0}}}))
    report_flags = ("--suite", "tiny", "--runs-dir", runs_dir, "--out", str(out), "--random-scores", str(random_scores))
    made = bench("report.py", *report_flags, "--normalise")
    assert made.returncode == 0, made.stdout + made.stderr
    records = sorted(glob.glob(str(out / "tiny" / "records" / "*" / "CartPole-v1" / "seed_*.json")))
    assert len(records) == 4
    scores = {}
    for path in records:
        with open(path) as f:
            record = json.load(f)
        (summary_path,) = glob.glob(os.path.join(runs_dir, "tiny", record["script"], "CartPole-v1",
                                                 f"seed_{record['seed']}", "*", "summary.json"))
        steps, returns = report.episode_returns(os.path.dirname(summary_path))
        assert record["episodes"] == len(returns) and record["last_100_return"] == pytest.approx(
            returns[np.argsort(steps, kind="stable")][-100:].mean())
        scores.setdefault(record["script"], {})[record["seed"]] = record["last_100_return"]
    best = max(np.mean(list(seeds.values())) for seeds in scores.values())
    with open(out / "tiny" / "scores.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4
    for row in rows:  # (score - random) / (best setting's mean - random)
        expected = (scores[row["script"]][int(row["seed"])] - 10.0) / (best - 10.0)
        assert float(row["normalised"]) == pytest.approx(expected)
    table = (out / "tiny" / "normalised.md").read_text()
    assert "| ppo.py: clip | " in table and "| ppo.py: plain | " in table and "| ppo.py: clip | ppo.py: plain | " in table
    assert "| 1.00 | " in table  # the best setting's mean over seeds, on the one task
    assert "0.82 (clipping, ε = 0.2)" in table and "-0.39 (no clipping or penalty)" in table  # the paper's
    import matplotlib.image
    for picture in ("normalised.png", "improvement.png", "curves.png"):
        image = matplotlib.image.imread(out / "tiny" / picture)
        assert image.shape[0] > 100 and image.std() > 0
    # The records outlive the runs: with the runs gone, the report is the same.
    shutil.rmtree(runs_dir)
    again = bench("report.py", *report_flags, "--normalise")
    assert again.returncode == 0 and (out / "tiny" / "normalised.md").read_text() == table
    random_scores.write_text(json.dumps({"scores": {"Pendulum-v1": {"mean": 10.0}}}))
    missing = bench("report.py", *report_flags, "--normalise", "--runs-dir", str(tmp_path / "none"))
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "no random score for CartPole-v1" in missing.stderr


def test_sb3_trpo_gets_our_kl_bound_on_gaussian_policies():
    """sb3-contrib's TRPO averages a Gaussian's KL over the action dimensions (ours sums them, the KL of
    the joint distribution): measured on its own policy, its KL is ours / d, so it gets max_kl / d and
    cg_damping / d, which make its constraint and its CG system (F / d + λ / d) ours divided by d."""
    import copy
    import dataclasses

    import sb3_train
    from stable_baselines3.common.distributions import kl_divergence
    from stable_baselines3.common.env_util import make_vec_env
    args = dataclasses.asdict(importlib.import_module("trpo").Args())
    env = make_vec_env("HalfCheetah-v5", n_envs=args["num_envs"])
    model = sb3_train.make_model("trpo", args, env)
    d = env.action_space.shape[0]
    assert d == 6 and model.target_kl == pytest.approx(args["max_kl"] / d)
    assert model.cg_damping == pytest.approx(args["cg_damping"] / d)
    obs = torch.as_tensor(np.random.default_rng(0).normal(size=(8, env.observation_space.shape[0])), dtype=torch.float32)
    old = copy.copy(model.policy.get_distribution(obs))
    with torch.no_grad():
        model.policy.log_std += 0.1
        model.policy.action_net.bias += 0.05
    new = model.policy.get_distribution(obs)
    joint = torch.distributions.kl_divergence(torch.distributions.Independent(new.distribution, 1),
                                              torch.distributions.Independent(old.distribution, 1)).mean()
    assert kl_divergence(new, old).mean().item() == pytest.approx(joint.item() / d, rel=1e-5)
    cartpole = sb3_train.make_model("trpo", args, make_vec_env("CartPole-v1", n_envs=args["num_envs"]))
    assert cartpole.target_kl == args["max_kl"]  # a Categorical's KL is one number per state: no d


def test_versus_sb3_runs_sb3_beside_each_job_at_the_same_settings(tmp_path):
    """--versus-sb3 follows each job of a script SB3 has with SB3's, seed by seed; SB3's run has the
    settings our script would have (its defaults where the config gives none), leaves a summary and
    tensorboard episodes as ours do, and the report sets the two side by side."""
    config, runs_dir = tmp_path / "zoo.toml", str(tmp_path / "runs")
    write_config(config, {"vs": {"seeds": [1, 2], "trpo": {"CartPole-v1": {"total_timesteps": 2048, "eval_episodes": 2,
                                                                          "max_kl": 0.02}},
                                 "reinforce": {"CartPole-v1": {"total_timesteps": 2000, "eval_episodes": 1}}}})
    flags = ("--suite", "vs", "--config", str(config), "--runs-dir", runs_dir, "--versus-sb3")
    planned = bench("run.py", *flags, "--dry-run").stdout.splitlines()
    assert [line.split()[2:5] for line in planned[1:]] == [
        ["trpo", "CartPole-v1", "seed"], ["trpo@sb3", "CartPole-v1", "seed"]] * 2 + [["reinforce", "CartPole-v1", "seed"]] * 2
    result = bench("run.py", *flags, "--scripts", "trpo", "--jobs", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    summaries = {(label, seed): summary for (label, _, seed), (_, summary) in job_summaries(runs_dir, "vs").items()}
    sb3, ours = summaries["trpo@sb3", 1], summaries["trpo", 1]
    assert sb3["peer"] == "sb3-contrib TRPO" and sb3["args"] == {**ours["args"], "runs_dir": sb3["args"]["runs_dir"]}
    assert sb3["args"]["max_kl"] == 0.02 and sb3["global_step"] == 2048 and sb3["eval_return"] is not None
    steps, returns = report.episode_returns(sb3["run_dir"])
    assert len(returns) > 20 and steps.max() <= 2048
    assert sb3["final_return"] == pytest.approx(np.mean(returns[np.argsort(steps, kind="stable")][-20:]))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    own = EventAccumulator(os.path.join(sb3["run_dir"], "sb3_logs")).Reload()  # SB3's metrics, beside ours
    assert "train/kl_divergence_loss" in own.Tags()["scalars"] and "train/is_line_search_success" in own.Tags()["scalars"]
    with open(os.path.join(runs_dir, "vs", "trpo@sb3", "CartPole-v1", "seed_1", "log.txt")) as f:
        progress = [line for line in f if line.startswith("step ")]
    assert progress and "2,048 (100%) | return " in progress[-1] and "steps/s | ETA 0m00s" in progress[-1]
    made = bench("report.py", "--suite", "vs", "--runs-dir", runs_dir, "--out", str(tmp_path / "out"))
    table = (tmp_path / "out" / "vs" / "results.md").read_text()
    assert made.returncode == 0 and "| trpo.py | CartPole-v1 | 2 / 2 | " in table and "| SB3 as trpo.py | " in table


def test_sb3_job_stops_on_ctrl_c_and_resumes(tmp_path):
    """Ctrl-C saves the SB3 model, its VecNormalize statistics and its counters (exit 130); --resume goes
    on to the budget, with the episodes of both parts in tensorboard, in order."""
    command = [sys.executable, os.path.join(ROOT, "benchmark", "sb3_train.py"), "--as", "ppo_continuous",
               "--env-id", "Pendulum-v1", "--seed", "3", "--runs-dir", str(tmp_path), "--total-timesteps", "6000",
               "--num-steps", "256", "--num-envs", "2", "--eval-episodes", "1"]
    job = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 60
    while not glob.glob(str(tmp_path / "*" / "events.*")) and time.time() < deadline:
        time.sleep(0.05)
    job.send_signal(signal.SIGINT)  # as soon as it logs: it stops at its next env step, long before 6,000
    output, _ = job.communicate(timeout=60)
    assert job.returncode == 130 and "resume with --resume" in output, output
    (path,) = glob.glob(str(tmp_path / "*" / "summary.json"))
    with open(path) as f:
        stopped = json.load(f)
    assert stopped["interrupted"] and 0 < stopped["global_step"] < 6000 and stopped["eval_return"] is None
    assert os.path.exists(os.path.join(stopped["run_dir"], "vecnormalize.pkl"))
    episodes_before = len(report.episode_returns(stopped["run_dir"])[1])
    resumed = subprocess.run([sys.executable, os.path.join(ROOT, "benchmark", "sb3_train.py"), "--resume",
                              stopped["checkpoint"]], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    with open(path) as f:
        finished = json.load(f)
    assert not finished["interrupted"] and 6000 <= finished["global_step"] < 6000 + 512  # one rollout: 2 x 256
    assert finished["eval_return"] is not None and finished["args"] == stopped["args"]
    assert finished["wall_seconds"] > stopped["wall_seconds"]  # the first part's seconds carried over
    steps, returns = report.episode_returns(finished["run_dir"])
    assert len(returns) > episodes_before and (np.diff(steps) >= 0).all() and steps.max() <= finished["global_step"]


def test_sb3_job_takes_the_scripts_defaults_and_refuses_what_sb3_lacks():
    import sb3_train
    args = sb3_train.script_args("trpo", ["--env-id", "Hopper-v5", "--max-kl", "0.02"])
    assert args["max_kl"] == 0.02 and args["cg_iters"] == importlib.import_module("trpo").Args().cg_iters
    for flags, message in ((["--as", "reinforce"], "no SB3 counterpart for reinforce.py"),
                           (["--as", "ppo", "--objective", "plain"], "the clipped objective alone"),
                           (["--as", "ppo", "--clip-vloss"], "--clip-vloss"), (["--as"], "--as needs a script"),
                           (["--resume", "/nonexistent.zip"], "--resume needs one checkpoint file")):
        result = bench("sb3_train.py", *flags)
        assert result.returncode == 2 and result.stderr.startswith("sb3_train.py: error:"), (flags, result.stderr)
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_versus_table_tests_ours_against_sb3():
    runs = [{**fake_run(script, seed, value), "final_return": value + 1} for script, values in
            (("trpo", [30.0, 40.0, 50.0]), ("trpo@sb3", [0.0, 10.0, 20.0])) for seed, value in enumerate(values, 1)]
    (row,) = [line for line in report.versus_sb3(runs) if line.startswith("| trpo.py")]
    # every run of ours beats every one of SB3's: P = 1; with 3 against 3 that is the smallest two-sided p, 2 / 20
    assert row == "| trpo.py | CartPole-v1 | 3 / 3 | 41.0 | 11.0 | 40.0 | 10.0 | 1.00 [1.00, 1.00] | 0.100 |"
    assert report.versus_sb3([r for r in runs if r["script"] == "trpo"]) == []  # no SB3 runs: no table
    ablated = [{**fake_run("trpo@return-reset", seed, value), "final_return": value} for seed, value in
               enumerate([5.0, 15.0, 25.0], 1)]
    rows = [line for line in report.versus_sb3(runs + ablated) if line.startswith("| trpo.py")]
    assert rows[0] == row  # the script first, then its ablation against the same SB3 runs
    assert rows[1].startswith("| trpo.py: return-reset | CartPole-v1 | 3 / 3 | 15.0 | 11.0 |")
    setting = [{**fake_run(label, seed, value), "final_return": value} for label, value in
               (("trpo@big", 60.0), ("trpo@big@sb3", 70.0)) for seed in (1, 2, 3)]
    rows = [line for line in report.versus_sb3(runs + setting) if line.startswith("| trpo.py")]
    assert len(rows) == 2 and rows[1].startswith("| trpo.py: big | CartPole-v1 | 3 / 3 | 60.0 | 70.0 |")  # its own SB3


class Endless(__import__("gymnasium").Env):
    """Reward 1 at every step, never terminating: a TimeLimit truncates it."""
    observation_space = __import__("gymnasium").spaces.Box(-1.0, 1.0, (1,), np.float32)
    action_space = __import__("gymnasium").spaces.Box(-1.0, 1.0, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        return np.zeros(1, np.float32), {}

    def step(self, action):
        return np.zeros(1, np.float32), 1.0, False, False, {}


def ablated_module(name: str, script: str):
    """The script with the ablation's change, imported under a name of its own (not run)."""
    import ablate
    module = type(sys)(f"{script[:-3]}_{name.replace('-', '_')}")
    exec(compile(ablate.ablated_source(name, os.path.join(ROOT, script)), script, "exec"), module.__dict__)
    return module


def test_every_ablation_still_fits_its_script():
    """Each ablation's replaced text occurs exactly once in its script, so none silently runs the script
    unchanged; a script that is not the ablation's is refused."""
    import ablate
    for name, (script, _, old, new) in ablate.ABLATIONS.items():
        changed = ablate.ablated_source(name, os.path.join(ROOT, script))
        with open(os.path.join(ROOT, script)) as f:
            source = f.read()
        assert changed != source and new in changed and changed.count(old) == new.count(old), name  # none left over
    with pytest.raises(ablate.UsageError, match="changes trpo.py"):
        ablate.ablated_source("return-reset", os.path.join(ROOT, "ppo.py"))
    result = bench("ablate.py", "no-such-ablation", "trpo.py")
    assert result.returncode == 2 and "no ablation 'no-such-ablation'" in result.stderr


def test_runner_runs_an_ablation_only_when_named_through_ablate_py(tmp_path):
    """A table with an `ablation` key is left out unless --scripts names it, gets no SB3 run beside it,
    runs its script through benchmark/ablate.py, and counts as finished on the next run."""
    config, runs_dir = tmp_path / "zoo.toml", str(tmp_path / "runs")
    job = {"total_timesteps": 1024, "num_steps": 256, "eval_episodes": 1, "norm_reward": True}
    write_config(config, {"ab": {"seeds": [1], "trpo": {"Pendulum-v1": job},
                                 "trpo@return-reset": {"Pendulum-v1": {"ablation": "return-reset", **job}}}})
    flags = ("--suite", "ab", "--config", str(config), "--runs-dir", runs_dir)
    everything = bench("run.py", *flags, "--dry-run", "--versus-sb3").stdout
    assert "1 jobs" not in everything and "return-reset" not in everything and "trpo@sb3" in everything
    named = bench("run.py", *flags, "--dry-run", "--versus-sb3", "--scripts", "trpo@return-reset").stdout
    assert named.splitlines()[1:] == [
        "  to run    trpo@return-reset Pendulum-v1 seed 1  --total-timesteps 1024 --num-steps 256 --eval-episodes 1 "
        "--norm-reward  (ablation return-reset)"]
    result = bench("run.py", *flags, "--scripts", "trpo@return-reset")
    assert result.returncode == 0, result.stdout + result.stderr
    (log,) = glob.glob(os.path.join(runs_dir, "ab", "trpo@return-reset", "Pendulum-v1", "seed_1", "log.txt"))
    with open(log) as f:
        text = f.read()
    assert "benchmark/ablate.py return-reset trpo.py --env-id Pendulum-v1" in text and "ablation return-reset:" in text
    (summary,) = [summary for (label, _, _), (_, summary) in job_summaries(runs_dir, "ab").items()]
    assert summary["global_step"] == 1024 and summary["args"]["norm_reward"]
    again = bench("run.py", *flags, "--scripts", "trpo@return-reset", "--dry-run").stdout
    assert "1 already finished" in again


def test_return_reset_ablation_cuts_the_running_return_at_a_truncation():
    """trpo.py keeps gymnasium's running return G through a time-limit truncation; the return-reset
    ablation zeroes it after every episode end, as SB3's VecNormalize does, having counted G first."""
    import gymnasium as gym
    import trpo
    for module, carried in ((trpo, True), (ablated_module("return-reset", "trpo.py"), False)):
        env = module.NormalizeReward(gym.wrappers.TimeLimit(Endless(), max_episode_steps=3), gamma=0.5)
        env.reset(seed=0)
        for _ in range(3):  # G: 1, 1.5, 1.75, then the truncation
            *_, truncated, _ = env.step(np.zeros(1, np.float32))
        assert truncated and env.return_rms.count == pytest.approx(3 + 1e-4)
        assert np.allclose(env.return_rms.mean, (1 + 1.5 + 1.75) / (3 + 1e-4))  # both counted G up to the end
        assert env.discounted_reward[0] == (1.75 if carried else 0.0)


def test_critic_mse_ablation_doubles_the_critics_loss():
    """critic-mse: sb3-contrib's F.mse_loss, the script's ½ Ê[(V - R̂)²] without the ½."""
    import trpo
    ablated = ablated_module("critic-mse", "trpo.py")
    values, returns = torch.tensor([1.0, 2.0, 4.0]), torch.tensor([0.0, 2.0, 1.0])
    assert trpo.value_loss(values, returns).item() == pytest.approx(5 / 3)  # ½ (1 + 0 + 9) / 3
    assert ablated.value_loss(values, returns).item() == pytest.approx(10 / 3)
    assert ablated.value_loss(values, returns).item() == pytest.approx(
        torch.nn.functional.mse_loss(values, returns).item())


def test_critic_eps_ablation_changes_only_the_critics_adam_eps():
    """critic-eps: the critic's Adam with ε = 1e-8 in place of the script's 1e-5, nothing else."""
    import trpo
    ablated = ablated_module("critic-eps", "trpo.py")
    agent = trpo.Agent(11, __import__("gymnasium").spaces.Box(-1.0, 1.0, (3,), np.float32))
    ours, theirs = trpo.make_optimizer(agent, trpo.Args()), ablated.make_optimizer(agent, ablated.Args())
    assert ours.defaults["eps"] == 1e-5 and theirs.defaults["eps"] == 1e-8
    assert {k: v for k, v in ours.defaults.items() if k != "eps"} == {
        k: v for k, v in theirs.defaults.items() if k != "eps"}


class Counting(__import__("gymnasium").Env):
    """Observation t at step t: 0 after a reset, then 1, 2, ...; a TimeLimit ends its episodes."""
    observation_space = __import__("gymnasium").spaces.Box(-100.0, 100.0, (1,), np.float64)
    action_space = __import__("gymnasium").spaces.Box(-1.0, 1.0, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        self.t = 0
        return np.zeros(1), {}

    def step(self, action):
        self.t += 1
        return np.full(1, float(self.t)), 0.0, False, False, {}


def test_final_obs_stats_ablation_counts_the_next_first_observation_not_the_final_one():
    """trpo.py, like gymnasium's NormalizeObservation, counts every observation it returns, the final one
    of an episode included; the final-obs-stats ablation normalises that one without counting it, as
    SB3's VecNormalize does (which counts the reset observation the vector env returns in its place)."""
    import gymnasium as gym
    import trpo
    for module, final_counted in ((trpo, True), (ablated_module("final-obs-stats", "trpo.py"), False)):
        env = module.NormalizeObservation(gym.wrappers.TimeLimit(Counting(), max_episode_steps=3))
        env.reset(seed=0)
        for _ in range(2):
            *_, truncated, _ = env.step(np.zeros(1, np.float32))
        assert not truncated and env.obs_rms.count == pytest.approx(3 + 1e-4)  # 0, 1, 2: both count these
        final, *_, truncated, _ = env.step(np.zeros(1, np.float32))
        assert truncated and env.obs_rms.count == pytest.approx((4 if final_counted else 3) + 1e-4)
        counted = [0.0, 1.0, 2.0, 3.0] if final_counted else [0.0, 1.0, 2.0]
        mean, var = np.mean(counted), np.var(counted)  # the statistics the final observation is normalised by
        assert final[0] == pytest.approx((3.0 - mean) / np.sqrt(var + 1e-8), rel=1e-3)
        assert env.update_running_mean  # the ablation restores the flag after the final step
        env.reset()
        assert env.obs_rms.count == pytest.approx((5 if final_counted else 4) + 1e-4)  # the next first one counts


def test_kl_ablation_measures_the_other_direction():
    """kl-new-old's kl_from is KL(π_θ ‖ π_θold): the script's with the two Gaussians swapped."""
    import gymnasium as gym
    import trpo
    ablated = ablated_module("kl-new-old", "trpo.py")
    torch.manual_seed(0)
    obs = torch.randn(5, 3)
    agent = trpo.Agent(3, gym.spaces.Box(-1.0, 1.0, (2,), np.float32))
    old = tuple(t.detach().clone() for t in agent.distribution(obs))  # log σ's copy, not a view of it
    with torch.no_grad():  # move the policy: its mean and its σ
        for parameter in agent.actor.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
        agent.log_std.add_(-0.2)
    new = agent.distribution(obs)
    forward = torch.distributions.Normal(old[0], old[1].exp())
    backward = torch.distributions.Normal(new[0], new[1].exp())
    expected = torch.distributions.kl_divergence(backward, forward).sum(-1)
    got = ablated.Agent.kl_from(agent, old, obs)
    assert torch.allclose(got, expected, atol=1e-6)
    assert not torch.allclose(got, trpo.Agent.kl_from(agent, old, obs), atol=1e-4)  # the script's differs
    # At θold both directions have the Fisher matrix as Hessian: the same products F v, so the same
    # natural-gradient step; they part only where the line search tests KL̄ ≤ δ, after the step.
    twin = ablated.Agent(3, gym.spaces.Box(-1.0, 1.0, (2,), np.float32))
    twin.load_state_dict(agent.state_dict())
    old = tuple(t.detach().clone() for t in agent.distribution(obs))  # θold: where the agent is now
    v = torch.randn(sum(p.numel() for p in agent.policy_parameters()))
    product = trpo.fisher_vector_product(agent, obs, old, damping=0.1)(v)
    ablated_product = ablated.fisher_vector_product(twin, obs, old, damping=0.1)(v)
    assert torch.allclose(product, ablated_product, rtol=1e-4, atol=1e-6) and (product - 0.1 * v).abs().max() > 1e-3


def test_speed_records_each_seed_run_alone(tmp_path):
    result = bench("speed.py", "--script", "ppo.py", "--seeds", "1", "2", "--out", str(tmp_path),
                   "--extra=--total-timesteps 512 --eval-episodes 1")
    assert result.returncode == 0, result.stderr
    with open(tmp_path / "ppo_CartPole-v1.json") as f:
        results = json.load(f)
    assert [r["seed"] for r in results["runs"]] == [1, 2] and "peer_runs" not in results
    for r in results["runs"]:
        assert r["global_step"] == 512 and r["sps"] > 0 and r["peak_rss_mib"] > 50  # torch alone is more
    assert "| ppo.py | not reached | not reached |" in result.stdout


def test_speed_says_an_env_without_a_threshold_has_none(tmp_path):
    result = bench("speed.py", "--script", "a2c.py", "--env-id", "Pendulum-v1", "--seeds", "1", "--out", str(tmp_path),
                   "--extra=--total-timesteps 256 --eval-episodes 1")
    assert result.returncode == 0, result.stderr
    assert "| a2c.py | no threshold | no threshold |" in result.stdout


def test_speed_runs_a_seed_in_one_process_then_in_two(tmp_path):
    result = bench("speed.py", "--script", "ppo.py", "--seeds", "1", "--nprocs", "1", "2", "--out", str(tmp_path),
                   "--extra=--total-timesteps 512 --eval-episodes 1")
    assert result.returncode == 0, result.stderr
    with open(tmp_path / "ppo_CartPole-v1_nprocs1-2.json") as f:
        runs = json.load(f)["runs"]
    assert [(r["seed"], r["nproc"], r["global_step"]) for r in runs] == [(1, 1, 512), (1, 2, 512)]
    assert "| ppo.py, 1 process |" in result.stdout and "| ppo.py, 2 processes |" in result.stdout


def test_speed_peers_only_for_scripts_sb3_has():
    result = bench("speed.py", "--script", "reinforce.py", "--peers")
    assert result.returncode == 2 and "SB3 has no counterpart of reinforce.py" in result.stderr
    result = bench("speed.py", "--script", "a2c.py", "--nprocs", "1", "2")
    assert result.returncode == 2 and "a2c.py runs in one process" in result.stderr


def test_env_speed_times_the_bare_env_then_the_scripts_wrappers(tmp_path):
    common = ("--env-id", "Pendulum-v1", "--num-envs", "2", "--steps", "200", "--repeats", "2", "--out", str(tmp_path))
    for flags in ([], ["--script", "a2c.py", "--norm-obs", "--norm-reward"]):
        result = bench("env_speed.py", *common, *flags)
        assert result.returncode == 0, result.stderr
    (record,) = glob.glob(str(tmp_path / "*.jsonl"))
    with open(record) as f:
        entries = [json.loads(line) for line in f]
    assert [e["wrappers"] for e in entries] == ["none (gym.make)", "a2c.py --norm-obs --norm-reward"]
    assert all(len(e["sps"]) == 2 and e["median"] == np.median(e["sps"]) > 0 for e in entries)
    with open(record[:-len(".jsonl")] + ".md") as f:
        assert "| Pendulum-v1 | 2 | a2c.py --norm-obs --norm-reward |" in f.read()


def test_env_speed_builds_the_scripts_own_wrappers():
    import env_speed
    for script, norm_obs, expected in (("a2c.py", True, {"NormalizeObservation"}), ("ppo.py", False, set())):
        envs = env_speed.script_vec_env(env_speed.Args(env_id="Pendulum-v1", num_envs=2, script=script,
                                                       norm_obs=norm_obs))
        names, env = set(), envs.envs[0]
        while hasattr(env, "env"):
            names.add(type(env).__name__)
            env = env.env
        envs.close()
        assert len(envs.envs) == 2 and "RecordEpisodeStatistics" in names
        assert names & {"NormalizeObservation", "NormalizeReward"} == expected


@pytest.mark.parametrize("flags, message", [(["--norm-obs"], "need --script"),
                                            (["--script", "ppo.py", "--norm-obs"], "ppo.py does not normalise"),
                                            (["--env-id", "NoSuchEnv-v0"], "NoSuchEnv"),
                                            (["--repeats", "0"], "must be positive")])
def test_env_speed_bad_flags_are_one_line_and_exit_2(flags, message, tmp_path):
    result = bench("env_speed.py", *flags, "--out", str(tmp_path))
    assert result.returncode == 2 and message in result.stderr and result.stderr.count("\n") == 1, result.stderr


def test_random_scores_plays_random_episodes_and_repeats_them_for_a_seed(tmp_path):
    """The 0 of the PPO paper's normalised scores: Pendulum's episodes are 200 steps of costs."""
    records = []
    for name in ("a", "b"):
        result = bench("random_scores.py", "--env-ids", "Pendulum-v1", "--episodes", "3", "--out", str(tmp_path / name))
        assert result.returncode == 0, result.stderr
        with open(tmp_path / name / "random_scores.json") as f:
            records.append(json.load(f))
    score = records[0]["scores"]["Pendulum-v1"]
    # Each of Pendulum's 200 steps costs between 0 and π² + 0.1·8² + 0.001·2² ≈ 16.3.
    assert len(score["returns"]) == 3 and all(-3300 < r < 0 for r in score["returns"])
    assert score["mean"] == pytest.approx(np.mean(score["returns"])) and len(set(score["returns"])) == 3
    assert records[1]["scores"] == records[0]["scores"]  # the same seed, the same episodes
    with open(tmp_path / "a" / "random_scores.md") as f:
        assert f"| Pendulum-v1 | {score['mean']:,.1f} |" in f.read()


@pytest.mark.parametrize("flags, message", [(["--episodes", "0"], "must be positive"),
                                            (["--env-ids", "NoSuchEnv-v0"], "NoSuchEnv")])
def test_random_scores_bad_flags_are_one_line_and_exit_2(flags, message, tmp_path):
    result = bench("random_scores.py", *flags, "--out", str(tmp_path))
    assert result.returncode == 2 and message in result.stderr and result.stderr.count("\n") == 1, result.stderr


def test_adam_eps_reads_the_gradient_rms_and_a_doubled_loss_is_half_the_eps():
    """benchmark/adam_eps.py (issue 23, B5): √v̂ read from an Adam state is the RMS of the gradients seen
    (constant gradients: exactly |g|), and Adam on 2·L moves the parameters as Adam on L with ε / 2."""
    import adam_eps

    def adam_run(scale, eps, steps=5):
        torch.manual_seed(0)
        w = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0]) * 1e-3)
        opt = torch.optim.Adam([w], lr=1e-2, eps=eps)
        for _ in range(steps):
            opt.zero_grad()
            (scale * 0.5 * (w ** 2).sum()).backward()
            opt.step()
        return w.detach().clone(), opt.state_dict()

    w_x2, state_x2 = adam_run(2.0, 1e-5)
    w_half_eps, state_half_eps = adam_run(1.0, 0.5e-5)
    w_plain, _ = adam_run(1.0, 1e-5)
    assert torch.allclose(w_x2, w_half_eps, rtol=1e-5, atol=0)
    assert not torch.allclose(w_x2, w_plain, rtol=1e-3, atol=0)  # the gradients (1e-3) are near ε here
    rms, eps = adam_eps.gradient_rms(state_x2)
    rms_half_eps, _ = adam_eps.gradient_rms(state_half_eps)
    assert eps == 1e-5 and torch.allclose(rms, 2 * rms_half_eps)  # same path, gradients twice as large
    constant = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.Adam([constant])
    for _ in range(3):
        constant.grad = torch.tensor([3e-5, -4e-4])
        opt.step()
        constant.data.zero_()
    assert torch.allclose(adam_eps.gradient_rms(opt.state_dict())[0], torch.tensor([3e-5, 4e-4], dtype=torch.double))
