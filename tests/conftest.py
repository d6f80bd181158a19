import json
import os
import subprocess
import sys
import types
from typing import Optional

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(ROOT, "tests")
sys.path[:0] = [ROOT, TESTS]  # `import ppo` and `import user_envs` as a user's script would
torch.set_num_threads(1)  # as the scripts do: these networks are small, and the tests share the cores


def run_script(script: str, *flags: str, cwd: str, timeout: float = 120,
               env: Optional[dict] = None) -> subprocess.CompletedProcess:
    """Run one of the scripts as a user would, with tests/ importable for the user's own envs and
    any further environment variables in `env`."""
    env = dict(os.environ, PYTHONPATH=TESTS, PYTHONUNBUFFERED="1", **(env or {}))
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *flags], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def check_usage_error(script: str, flags: list[str], message: str, cwd, env: Optional[dict] = None) -> None:
    """A user's mistake: exit status 2, one line on stderr naming the script and the problem, and
    nothing started (no runs/ directory)."""
    result = run_script(script, *flags, cwd=str(cwd), env=env)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith(f"{script}: error:") and message in result.stderr
    assert not os.path.exists(os.path.join(cwd, "runs"))  # stopped before training started


def check_help(script: str, args_class) -> None:
    """`--help` exits 0 and names every field of the script's Args as a flag."""
    result = subprocess.run([sys.executable, os.path.join(ROOT, script), "--help"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0
    for field in args_class.__dataclass_fields__:
        assert "--" + field.replace("_", "-") in result.stdout, field


def read_scalars(run_dir: str, tag: str) -> list[tuple[int, float]]:
    """(step, value) pairs a run logged to tensorboard under `tag`."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    accumulator = EventAccumulator(run_dir, size_guidance={"scalars": 0})
    accumulator.Reload()
    return [(event.step, event.value) for event in accumulator.Scalars(tag)]


@pytest.fixture
def runs_dir(tmp_path):
    return str(tmp_path / "runs")


# ------------------------------------------------------------------------------ learning tests
# A test that asserts what training reached (a return, a step count, a KL) must hold on any CPU,
# where the same seed follows another trajectory. Its budget and bound are chosen from many seeds on
# one machine, with a margin below the worst (../shared/CONVENTIONS.md, "Determinism and learning
# tests"). benchmark/learning_bounds.py reruns every such test over a range of seeds: it sets
# LEARNING_SEEDS (e.g. "1-20") to replace each test's own seeds, and LEARNING_RECORD to a file that
# collects what every run reached, written before the test asserts anything.

def pytest_configure(config):
    config.addinivalue_line("markers", "learning: asserts what training reached; its bound was chosen over seeds "
                                       "(benchmark/learning_bounds.py)")


def learning_seeds(*seeds: int) -> list[int]:
    """The seeds a learning test trains with: its own, or those of LEARNING_SEEDS during a sweep."""
    sweep = os.environ.get("LEARNING_SEEDS")
    if not sweep:
        return list(seeds)
    first, _, last = sweep.partition("-")
    return list(range(int(first), int(last or first) + 1))


@pytest.fixture
def record_learning(request):
    """record(seed, **reached): during a sweep, one JSON line per run in LEARNING_RECORD; otherwise nothing."""
    path = os.environ.get("LEARNING_RECORD")
    params = getattr(request.node, "callspec", None)
    params = {name: value.__name__ if isinstance(value, types.ModuleType) else value
              for name, value in (params.params.items() if params else ()) if name != "seed"}

    def record(seed: int, **reached) -> None:
        if path:
            reached = {name: value.item() if hasattr(value, "item") else value for name, value in reached.items()}
            line = {"test": f"{request.node.path.name}::{request.node.originalname}", "params": params,
                    "seed": seed, **reached}
            with open(path, "a") as f:  # one short write per line: safe with several pytest workers
                f.write(json.dumps(line, default=str) + "\n")
    return record
