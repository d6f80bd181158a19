import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(ROOT, "tests")
sys.path[:0] = [ROOT, TESTS]  # `import ppo` and `import user_envs` as a user's script would


def run_script(script: str, *flags: str, cwd: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run one of the scripts as a user would, with tests/ importable for the user's own envs."""
    env = dict(os.environ, PYTHONPATH=TESTS, PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *flags], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def read_scalars(run_dir: str, tag: str) -> list[tuple[int, float]]:
    """(step, value) pairs a run logged to tensorboard under `tag`."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    accumulator = EventAccumulator(run_dir, size_guidance={"scalars": 0})
    accumulator.Reload()
    return [(event.step, event.value) for event in accumulator.Scalars(tag)]


@pytest.fixture
def runs_dir(tmp_path):
    return str(tmp_path / "runs")
