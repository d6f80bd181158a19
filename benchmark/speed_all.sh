#!/usr/bin/env bash
# The speed comparison in README.md: every script on CartPole-v1 and HalfCheetah-v5, 3 seeds, one run at
# a time, each of ours followed by SB3's counterpart with the same settings where SB3 has one. Run it on
# an otherwise idle machine, with requirements-dev.txt installed. About 25 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
speed() { python benchmark/speed.py --seeds 1 2 3 --out benchmark/results/speed_suite "$@"; }

# CartPole-v1: each script's defaults (tuned on CartPole), to the solve threshold and on to 100k or 200k steps.
speed --script reinforce.py --env-id CartPole-v1 --extra="--total-timesteps 100000"
speed --script reinforce_baseline.py --env-id CartPole-v1 --extra="--total-timesteps 100000"
speed --script a2c.py --env-id CartPole-v1 --peers
speed --script trpo.py --env-id CartPole-v1 --peers
speed --script ppo.py --env-id CartPole-v1 --peers

# HalfCheetah-v5, 51,200 steps (no threshold is reached this early: steps/s and memory), with the
# MuJoCo settings of benchmark/zoo.toml.
speed --script reinforce.py --env-id HalfCheetah-v5 --extra="--total-timesteps 51200 --norm-obs --batch-steps 4000"
speed --script reinforce_baseline.py --env-id HalfCheetah-v5 --extra="--total-timesteps 51200 --norm-obs --batch-steps 4000"
speed --script a2c.py --env-id HalfCheetah-v5 --peers --extra="--total-timesteps 51200 --num-envs 4 --num-steps 8 \
  --learning-rate 0.001 --anneal-lr --gamma 0.99 --gae-lambda 0.9 --norm-obs --norm-reward"
speed --script trpo.py --env-id HalfCheetah-v5 --peers --extra="--total-timesteps 51200 --num-envs 2 --num-steps 1024 \
  --num-minibatches 16 --critic-epochs 20 --cg-iters 25 --gae-lambda 0.95 --norm-obs --norm-reward --max-kl 0.04"
speed --script ppo_continuous.py --env-id HalfCheetah-v5 --peers --extra="--total-timesteps 51200"
python benchmark/report.py --speed benchmark/results/speed_suite   # the table in README.md
