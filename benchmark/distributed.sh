#!/usr/bin/env bash
# The comparison of one process with two under torchrun in README.md: the same flags (so the same
# batch) both ways, each seed with 1 then 2 processes. Run it on an otherwise idle machine. About
# 15 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
speed() { python benchmark/speed.py --seeds 1 2 3 --nprocs 1 2 "$@"; }

# CartPole-v1, ppo.py's defaults (8 envs: 4 per process with two) to 50k steps: learning and speed.
speed --script ppo.py --env-id CartPole-v1 --extra="--total-timesteps 50000" --out benchmark/results/distributed

# HalfCheetah-v5, ppo_continuous.py's batch of 2048 steps as 2 envs x 1024 (1 env per process with two),
# 51,200 steps: steps/s. First with the default 32 minibatches of 64, then with 4 of 512.
speed --script ppo_continuous.py --env-id HalfCheetah-v5 --extra="--total-timesteps 51200 --num-envs 2 --num-steps 1024" \
  --out benchmark/results/distributed
speed --script ppo_continuous.py --env-id HalfCheetah-v5 \
  --extra="--total-timesteps 51200 --num-envs 2 --num-steps 1024 --num-minibatches 4" \
  --out benchmark/results/distributed/minibatches4
# The same batch as 8 envs x 256 steps (4 envs per process with two), 4 minibatches of 512.
speed --script ppo_continuous.py --env-id HalfCheetah-v5 \
  --extra="--total-timesteps 51200 --num-envs 8 --num-steps 256 --num-minibatches 4" \
  --out benchmark/results/distributed/envs8_minibatches4
