"""One ppo.py update split over the ranks started by torchrun, for test_distributed.py.

    python -m torch.distributed.run --standalone --nproc-per-node 2 tests/torchrun_update.py OUT

Every rank builds the same agent and the same rollout of 64 samples (seed 0), keeps its share of
the rollout, and takes one plain gradient step on it with ppo_update; rank 0 saves the parameters
to OUT. Averaged over the ranks, the gradient is that of one process on the whole rollout, so the
parameters must match one process's step on all 64 samples.
"""

import functools
import gc
import os
import sys

import torch
import torch.distributed as dist

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import ppo  # noqa: E402


def one_step(agent: ppo.Agent, batch: dict, world_size: int) -> None:
    """One SGD step on the batch: one epoch, one minibatch, no clipping of the gradient's norm, no
    advantage normalisation (which would use each rank's share alone)."""
    args = ppo.Args(num_minibatches=1, update_epochs=1, norm_adv=False, max_grad_norm=1e9, ent_coef=0.01)
    average_ = functools.partial(ppo.average_over_ranks_, world_size=world_size) if world_size > 1 else None
    ppo.ppo_update(agent, torch.optim.SGD(agent.parameters(), lr=0.1), batch, args, average_=average_)


def agent_and_rollout() -> tuple[ppo.Agent, dict]:
    torch.manual_seed(0)
    agent = ppo.Agent(4, 2)
    obs = torch.randn(64, 4)
    actions = torch.randint(0, 2, (64,))
    with torch.no_grad():
        logprobs = agent.logprob_entropy(obs, actions)[0] + 0.1 * torch.randn(64)  # not the agent's own: ratios ≠ 1
        values = agent.value(obs)
        dist = agent.distribution(obs)
    return agent, {"obs": obs, "actions": actions, "logprobs": logprobs, "advantages": torch.randn(64),
                   "returns": values + torch.randn(64), "values": values, "dist": dist}


if __name__ == "__main__":
    dist.init_process_group("gloo")
    rank, world_size = dist.get_rank(), dist.get_world_size()
    agent, rollout = agent_and_rollout()
    share = 64 // world_size
    one_step(agent, {key: value[rank * share:(rank + 1) * share] for key, value in rollout.items()}, world_size)
    if rank == 0:
        torch.save(agent.state_dict(), sys.argv[1])
    dist.destroy_process_group()
    gc.collect()  # as in ppo.py's train(): freed only at interpreter exit, the group's leftovers can abort a rank
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # as ppo.py does under torchrun: the interpreter's shutdown now and then aborted a rank
