"""Run a benchmark suite: every (script, env, seed) job of benchmark/zoo.toml, `--jobs` at a time.

Each job is the script run as a user would run it, in a subprocess, with the flags its table in the
config gives, its output in `<runs-dir>/<suite>/<table>/<env id>/seed_<seed>/` (the table: the
script's name, or "<script>@<variant>" for a setting of it): the run's own folder
(tensorboard events, checkpoint, summary.json) and `log.txt` (what it printed). A job whose
summary.json says it finished, with the settings the config gives now, is skipped, so running the
same command again after a stop (Ctrl-C or SIGTERM) picks up where it left off: an interrupted job
resumes from its checkpoint; a failed or half-written one, or one whose settings changed, starts
again. A failed job is reported with the end of its log and the others go on. Then
`python benchmark/report.py --suite <suite>` makes the tables and plots.

    python benchmark/run.py --suite classic
    python benchmark/run.py --suite classic --scripts ppo trpo --envs CartPole-v1 --seeds 1 2
    python benchmark/run.py --suite mujoco --jobs 16 --dry-run
    python benchmark/run.py --suite mujoco --scripts trpo --envs Hopper-v5 --seeds 1 2 3 4 5 --versus-sb3

With --versus-sb3, each job of a script that Stable-Baselines3 also has is followed by SB3's run with
the same settings (benchmark/sb3_train.py; needs stable-baselines3 and sb3-contrib), in a folder
"<table>@sb3" of its own (trpo@sb3 beside trpo); benchmark/report.py then sets the two side by side.

A table with an `ablation = "<name>"` key runs its script through benchmark/ablate.py, one line of it
changed, and only when --scripts names the table (`--scripts trpo@return-reset`); the report sets it
beside SB3 as well.
"""

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from typing import Optional

import tyro

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SB3_SCRIPTS = ("ppo", "ppo_continuous", "a2c", "trpo", "ddpg")  # those benchmark/sb3_train.py has a counterpart for


@dataclass
class Args:
    suite: str = "classic"
    """the suite to run: a top-level table of the config (smoke, classic, mujoco)"""
    scripts: Optional[list[str]] = None
    """only these scripts (e.g. ppo trpo) or variants (ppo_continuous@plain); default: all the suite has"""
    envs: Optional[list[str]] = None
    """only these env ids; default: every env the suite has"""
    seeds: Optional[list[int]] = None
    """these seeds in place of the suite's own"""
    jobs: int = os.cpu_count() or 1
    """jobs at a time; each job uses one core"""
    config: str = os.path.join(ROOT, "benchmark", "zoo.toml")
    """the suites and each job's flags"""
    runs_dir: str = os.path.join(ROOT, "benchmark", "runs")
    """where the jobs' runs and logs go (one folder per suite)"""
    dry_run: bool = False
    """list the jobs and whether each is finished, and run nothing"""
    versus_sb3: bool = False
    """beside each job of a script SB3 has (ppo, ppo_continuous, a2c, trpo, ddpg), its Stable-Baselines3
    counterpart with the same settings (benchmark/sb3_train.py), as "<table>@sb3", seed by seed"""


class UsageError(Exception):
    """A bad flag or config: reported in one line, exit status 2."""


@dataclass
class Job:
    label: str  # the config's table name: the script, or "<script>@<variant>" for one of its settings
    env_id: str
    seed: int
    flags: dict
    folder: str
    ablation: Optional[str] = None  # run through benchmark/ablate.py with this ablation

    @property
    def script(self) -> str:
        return self.label.split("@")[0]

    @property
    def name(self) -> str:
        return f"{self.label} {self.env_id} seed {self.seed}"

    @property
    def steps(self) -> int:
        return int(self.flags.get("total_timesteps", 0))


def as_flags(settings: dict) -> list[str]:
    """{"learning_rate": 3e-4, "norm_obs": False} -> ["--learning-rate", "0.0003", "--no-norm-obs"]."""
    flags = []
    for key, value in settings.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else "--no-" + flag[2:])
        else:
            flags += [flag, str(value)]
    return flags


def plan(args: Args) -> list[Job]:
    """The selected jobs of the suite, in config order (script, env), seeds innermost. A table named
    "<script>@<variant>" runs <script>.py with its own flags and reports as a script of its own."""
    try:
        with open(args.config, "rb") as f:
            config = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise UsageError(f"cannot read the config {args.config}: {error}")
    if args.suite not in config:
        raise UsageError(f"no suite {args.suite!r} in {args.config}; it has: {', '.join(config)}")
    if args.jobs < 1:
        raise UsageError(f"--jobs must be at least 1, got {args.jobs}")
    suite = config[args.suite]
    seeds = args.seeds if args.seeds is not None else suite.get("seeds", [1])
    tables = {label: envs for label, envs in suite.items() if isinstance(envs, dict)}
    suite_scripts = {label.split("@")[0] for label in tables} | set(tables)
    suite_envs = {env_id for envs in tables.values() for env_id in envs}
    for wanted, known, what in ((args.scripts, suite_scripts, "script"), (args.envs, suite_envs, "env")):
        unknown = sorted(set(wanted or []) - set(known))
        if unknown:
            raise UsageError(f"suite {args.suite!r} has no {what} {', '.join(unknown)}; "
                             f"it has: {', '.join(sorted(known))}")
    jobs = []
    for label, envs in tables.items():
        script = label.split("@")[0]
        if args.scripts is not None and script not in args.scripts and label not in args.scripts:
            continue
        if not os.path.exists(os.path.join(ROOT, f"{script}.py")):
            print(f"skipping {label}: there is no {script}.py yet", flush=True)
            continue
        for env_id, flags in envs.items():
            if args.envs is not None and env_id not in args.envs:
                continue
            flags = dict(flags)
            ablation = flags.pop("ablation", None)
            if ablation is not None and (args.scripts is None or label not in args.scripts):
                continue  # an ablation runs only when its table is named
            sb3 = args.versus_sb3 and script in SB3_SCRIPTS and ablation is None
            labels = [label] + ([f"{label}@sb3"] if sb3 else [])
            for seed in seeds:
                for name in labels:
                    folder = os.path.join(args.runs_dir, args.suite, name, env_id.replace("/", "_").replace(":", "_"),
                                          f"seed_{seed}")
                    jobs.append(Job(name, env_id, seed, flags, folder, ablation if name == label else None))
    if not jobs:
        raise UsageError(f"the selection leaves no job in suite {args.suite!r}")
    return jobs


def read_summary(job: Job) -> Optional[dict]:
    """The job's summary.json, if its run got as far as writing one."""
    paths = glob.glob(os.path.join(glob.escape(job.folder), "*", "summary.json"))
    if len(paths) != 1:
        return None
    try:
        with open(paths[0]) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError):
        return None


def same_settings(job: Job, summary: dict) -> bool:
    """Whether a run was made with the job's env, seed and flags (the config may have changed since)."""
    saved = summary.get("args", {})
    wanted = {"env_id": job.env_id, "seed": job.seed, **job.flags}
    return all(key in saved and saved[key] == value for key, value in wanted.items())


def is_finished(job: Job) -> bool:
    summary = read_summary(job)
    return (summary is not None and not summary.get("interrupted") and not summary.get("failed")
            and same_settings(job, summary))


def start(job: Job) -> subprocess.Popen:
    """Start the job's script; an interrupted run with a checkpoint resumes, anything else starts afresh.
    The job gets a session of its own, so a Ctrl-C in the terminal reaches the runner alone, which
    passes one SIGINT on to each job (a second one would make a script quit without saving)."""
    summary = read_summary(job)
    resumable = summary is not None and summary.get("interrupted") and same_settings(job, summary)
    checkpoint = summary.get("checkpoint") if resumable else None
    program = ([os.path.join(ROOT, "benchmark", "sb3_train.py")] if job.label.endswith("@sb3")
               else [os.path.join(ROOT, "benchmark", "ablate.py"), job.ablation, f"{job.script}.py"] if job.ablation
               else [os.path.join(ROOT, f"{job.script}.py")])
    if checkpoint and os.path.exists(checkpoint):
        command = [sys.executable, *program, "--resume", checkpoint]
        mode = "a"
    else:
        shutil.rmtree(job.folder, ignore_errors=True)
        os.makedirs(job.folder)
        script_flags = ["--env-id", job.env_id, "--seed", str(job.seed), "--runs-dir", job.folder, *as_flags(job.flags)]
        command = [sys.executable, *program, *(["--as", job.script] if job.label.endswith("@sb3") else []), *script_flags]
        mode = "w"
    log = open(os.path.join(job.folder, "log.txt"), mode)
    log.write("$ " + " ".join(command) + "\n")
    log.flush()
    with log:  # the job writes to its own copy of the file
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True,
                                env=dict(os.environ, PYTHONUNBUFFERED="1"))


def log_tail(job: Job, lines: int = 8) -> str:
    with open(os.path.join(job.folder, "log.txt"), errors="replace") as f:
        return "".join("    " + line for line in f.readlines()[-lines:])


def show(value: Optional[float]) -> str:
    return "none" if value is None else f"{value:.1f}"


def duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


def main(args: Args) -> int:
    jobs = plan(args)
    pending = [job for job in jobs if not is_finished(job)]
    print(f"suite {args.suite}: {len(jobs)} jobs, {len(jobs) - len(pending)} already finished, "
          f"{len(pending)} to run, {args.jobs} at a time; output under {os.path.join(args.runs_dir, args.suite)}",
          flush=True)
    if args.dry_run:
        for job in jobs:
            print(f"  {'finished' if job not in pending else 'to run  '}  {job.name}  {' '.join(as_flags(job.flags))}"
                  + (f"  (ablation {job.ablation})" if job.ablation else ""))
        return 0

    running: dict[subprocess.Popen, tuple[Job, float]] = {}
    done, failed = [], []
    began, last_report = time.time(), 0.0
    try:
        while pending or running:
            while pending and len(running) < args.jobs:
                job = pending.pop(0)
                running[start(job)] = (job, time.time())
            time.sleep(0.2)
            for process, (job, started) in list(running.items()):
                if process.poll() is None:
                    continue
                del running[process]
                if process.returncode == 0 and is_finished(job):
                    done.append(job)
                    summary = read_summary(job)
                    print(f"done    {job.name}: eval return {show(summary['eval_return'])}, "
                          f"training {show(summary['final_return'])}, {duration(time.time() - started)}", flush=True)
                else:
                    failed.append(job)
                    print(f"FAILED  {job.name} (exit status {process.returncode}); its log, "
                          f"{os.path.join(job.folder, 'log.txt')}, ends:\n{log_tail(job)}", end="", flush=True)
            if time.time() - last_report >= 30 or not (pending or running):
                last_report = time.time()
                print(progress(done, failed, running, pending, began), flush=True)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: each running job saves its checkpoint and stops
        stop(running)
        print(f"\ninterrupted: {len(done)} jobs finished this time; run the same command again to go on "
              "(finished jobs are skipped, interrupted ones resume)", file=sys.stderr)
        return 130
    except BaseException:
        stop(running)  # no job is left running unattended
        raise
    if failed:
        print(f"{len(failed)} of {len(done) + len(failed)} jobs failed: {', '.join(job.name for job in failed)}")
        return 1
    print(f"all {len(jobs)} jobs of suite {args.suite} finished; "
          f"next: python benchmark/report.py --suite {args.suite}")
    return 0


def stop(running: dict) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    for process in running:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
    for process in running:
        process.wait()


def raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def progress(done: list, failed: list, running: dict, pending: list, began: float) -> str:
    """Jobs done / running / left and an estimate of the time left, from the steps done so far."""
    elapsed = time.time() - began
    steps_done = sum(job.steps for job in done)
    steps_left = sum(job.steps for job in pending) + sum(job.steps for job, _ in running.values()) / 2
    if steps_done and steps_left:
        eta = f"about {duration(steps_left * elapsed / steps_done)} left"
    else:
        eta = "time left known after the first job" if steps_left else "nothing left"
    failures = f" ({len(failed)} failed)" if failed else ""
    return (f"[{duration(elapsed)}] {len(done) + len(failed)} done{failures}, {len(running)} running, "
            f"{len(pending)} left; {eta}")


if __name__ == "__main__":
    cli_args = tyro.cli(Args, description=__doc__.split("\n\n")[0])
    cli_args.runs_dir, cli_args.config = os.path.abspath(cli_args.runs_dir), os.path.abspath(cli_args.config)
    signal.signal(signal.SIGTERM, raise_interrupt)  # as Ctrl-C: the jobs save checkpoints
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started with SIGINT ignored (`cmd &`)
    try:
        sys.exit(main(cli_args))
    except UsageError as error:
        print(f"run.py: error: {error}", file=sys.stderr)
        sys.exit(2)
