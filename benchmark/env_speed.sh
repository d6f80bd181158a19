#!/usr/bin/env bash
# README's table of the physical limit: each env of the speed comparison (benchmark/speed_all.sh)
# stepped alone with random actions, in as many copies as each script runs, bare and inside the
# script's own wrappers with the flags speed_all.sh gives it. About 5 minutes on 2 cores; run it on
# an otherwise idle machine, right after speed_all.sh, so that the two compare.
set -euo pipefail
cd "$(dirname "$0")/.."
limit() { python benchmark/env_speed.py "$@" 2> >(grep -v "settotalmass\|^$" >&2); }

for n in 1 4 8; do limit --env-id CartPole-v1 --num-envs $n; done
limit --env-id CartPole-v1 --num-envs 1 --script reinforce.py
limit --env-id CartPole-v1 --num-envs 8 --script a2c.py
limit --env-id CartPole-v1 --num-envs 4 --script trpo.py
limit --env-id CartPole-v1 --num-envs 8 --script ppo.py

for n in 1 2 4; do limit --env-id HalfCheetah-v5 --num-envs $n; done
limit --env-id HalfCheetah-v5 --num-envs 1 --script reinforce.py --norm-obs
limit --env-id HalfCheetah-v5 --num-envs 4 --script a2c.py
limit --env-id HalfCheetah-v5 --num-envs 4 --script a2c.py --norm-obs --norm-reward
limit --env-id HalfCheetah-v5 --num-envs 2 --script trpo.py --norm-obs --norm-reward
limit --env-id HalfCheetah-v5 --num-envs 1 --script ppo_continuous.py --norm-obs --norm-reward
