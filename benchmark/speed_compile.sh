#!/usr/bin/env bash
# --compile against the default mode and SB3 (issue 21): ppo.py on CartPole-v1 and ppo_continuous.py on
# HalfCheetah-v5, the settings of speed_all.sh, 3 seeds, each of ours followed by SB3's. Run it on an
# otherwise idle machine right after speed_all.sh, whose runs are the default mode's. The first seed
# compiles from nothing; later ones find some of torch.compile's work in its cache (compile_seconds,
# in the JSON, is the first update's wall time, compiling included). About 8 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
speed() { python benchmark/speed.py --seeds 1 2 3 --out benchmark/results/speed_compile "$@"; }
speed --script ppo.py --env-id CartPole-v1 --peers --extra="--compile"
speed --script ppo_continuous.py --env-id HalfCheetah-v5 --peers --extra="--total-timesteps 51200 --compile"
python benchmark/report.py --speed benchmark/results/speed_compile   # writes speed.md there
