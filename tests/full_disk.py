"""Run a script as `python SCRIPT ...` would, on a disk that fills up as soon as a checkpoint is written.

    python tests/full_disk.py a2c.py --resume runs/<run> --total-timesteps 2000

torch.save writes the first half of the file it was given, then fails as a full disk does
(OSError: No space left on device). test_faults.py checks that the script says so in one line,
exits with status 1, and leaves the checkpoint that was there before whole.
"""

import errno
import os
import runpy
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def save_on_a_full_disk(obj, path, *args, **kwargs):
    with open(path, "wb") as f:
        f.write(b"PK\x03\x04" + b"\0" * 512)  # the start of a zip archive, then no more room
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)


if __name__ == "__main__":
    script = os.path.join(ROOT, sys.argv[1])
    sys.argv = [script, *sys.argv[2:]]
    torch.save = save_on_a_full_disk
    runpy.run_path(script, run_name="__main__")
