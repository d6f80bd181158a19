"""Run ppo.py's or ppo_continuous.py's train() under torchrun and watch what the ranks share.

    python -m torch.distributed.run --standalone --nproc-per-node 2 tests/torchrun_check.py OUT ppo [flags]

After every update, every rank gathers every rank's parameters and records whether they are
bitwise identical to its own; after every merge of normalisation statistics (ppo_continuous.py),
the same for the statistics. Every call of save_checkpoint is recorded with its rank. Each rank
writes what it saw to OUT/rank<r>.json for the test to read.
"""

import importlib
import json
import os
import sys

import torch
import torch.distributed as dist
import tyro

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

out_dir, module_name, flags = sys.argv[1], sys.argv[2], sys.argv[3:]
script = importlib.import_module(module_name)
rank = int(os.environ["RANK"])
seen = {"updates": 0, "stopped_early": 0, "parameters_identical": True, "merges": 0, "statistics_identical": True,
        "saves": 0, "merged_counts": []}


def same_on_every_rank(obj) -> bool:
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return all(torch.equal(torch.as_tensor(other), torch.as_tensor(obj)) for other in gathered)


def checked_update(agent, optimizer, batch, args, *more, **keywords):
    result = ppo_update(agent, optimizer, batch, args, *more, **keywords)
    flat = torch.cat([p.detach().reshape(-1).cpu() for p in agent.parameters()])
    seen["updates"] += 1
    seen["stopped_early"] += result["stopped_early"]
    seen["parameters_identical"] &= same_on_every_rank(flat)
    return result


def checked_merge(rms, before, per_rank):
    merge_running_stats(rms, before, per_rank)
    seen["merges"] += 1
    seen["statistics_identical"] &= same_on_every_rank(torch.as_tensor(
        [float(rms.count), *map(float, rms.mean.reshape(-1)), *map(float, rms.var.reshape(-1))], dtype=torch.float64))
    seen["merged_counts"].append(float(rms.count))


def recorded_save(*args, **kwargs):
    seen["saves"] += 1
    save_checkpoint(*args, **kwargs)


ppo_update, script.ppo_update = script.ppo_update, checked_update
save_checkpoint, script.save_checkpoint = script.save_checkpoint, recorded_save
if hasattr(script, "merge_running_stats"):
    merge_running_stats, script.merge_running_stats = script.merge_running_stats, checked_merge

summary = script.train(tyro.cli(script.Args, args=flags))
with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
    json.dump({**seen, "summary": summary}, f)
sys.stdout.flush()
sys.stderr.flush()
os._exit(0)  # as ppo.py does under torchrun: the interpreter's shutdown now and then aborted a rank
