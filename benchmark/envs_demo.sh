#!/usr/bin/env bash
# The envs and mistakes of issue 20, as a user meets them: each command, its exit status and the
# last lines it printed. tests/user_envs.py (this checkout's) supplies the small envs. The video
# commands need moviepy (pip install moviepy); this machine has Debian's libegl1 and libegl-mesa0.
#
#     bash benchmark/envs_demo.sh ROOT LABEL    # ROOT: a checkout (e.g. a git worktree)
#
# Results: benchmark/results/envs/ (before and after the change).
HERE=$(cd "$(dirname "$0")/.." && pwd); ROOT=$(cd "$1" && pwd); W=/tmp/envs_demo/$2
rm -rf "$W"; mkdir -p "$W"; cd "$W" || exit 1
export PYTHONPATH=$HERE/tests
show() {  # show SECONDS COMMAND...: run it (killed after SECONDS), print its status and last lines
    local limit=$1; shift; echo "\$ ${*/#$ROOT\//}" | sed "s|$ROOT/||g"
    timeout -k 5 "$limit" "$@" > out.txt 2>&1; local status=$?
    [ $status = 124 ] || [ $status = 137 ] && echo "(still running after ${limit} s: SIGTERM, then SIGKILL 5 s later; status $status)" || echo "exit status $status, $(wc -l < out.txt) lines"
    tail -n 2 out.txt | cut -c1-220 | sed "s|$ROOT/||g"; echo
}
show 60 python $ROOT/ppo.py --env-id FrozenLake-v1 --total-timesteps 2048 --runs-dir r
show 60 python $ROOT/a2c.py --env-id Blackjack-v1 --total-timesteps 2000 --runs-dir r
show 60 python $ROOT/trpo.py --env-id user_envs:DictOfBoxes-v0 --total-timesteps 2048 --runs-dir r
show 60 python $ROOT/ppo.py --env-id CarRacing-v3 --runs-dir r
show 120 python $ROOT/ppo_continuous.py --env-id Hopper-v5 --capture-video --total-timesteps 2048 --eval-episodes 1 --runs-dir r
ls r/Hopper*/videos 2>/dev/null | head -n 3; echo
show 120 env MUJOCO_GL=osmesa python $ROOT/ppo_continuous.py --env-id Hopper-v5 --capture-video --total-timesteps 2048 --eval-episodes 1 --runs-dir r
show 60 python $ROOT/reinforce.py --env-id user_envs:ShortCorridor --total-timesteps 2000 --runs-dir r
show 20 python $ROOT/reinforce.py --env-id user_envs:CounterForever-v0 --total-timesteps 2000 --runs-dir r
show 60 python $ROOT/a2c.py --env-id user_envs:NaNAtTermination --total-timesteps 2000 --runs-dir r
show 60 python $ROOT/trpo.py --env-id user_envs:NaNAtTermination --total-timesteps 2048 --runs-dir r
show 60 python $ROOT/a2c.py --exp-name a/b --total-timesteps 2000 --runs-dir r
show 60 python $ROOT/a2c.py --total-timesteps 2000 --runs-dir /proc/runs
echo "\$ reinforce.py --total-timesteps 2000 --eval-episodes 100000, Ctrl-C (SIGINT) 5 s after training ends"
# A background job of a script starts with SIGINT ignored; give the run Python's Ctrl-C back.
python -c 'import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execvp(sys.argv[1], sys.argv[1:])' \
    python "$ROOT/reinforce.py" --total-timesteps 2000 --eval-episodes 100000 --runs-dir ctrlc > out.txt 2>&1 & p=$!
for _ in $(seq 300); do sleep 0.1; ls ctrlc/*/reinforce.pt > /dev/null 2>&1 && break; done; sleep 5
kill -INT $p; wait $p; echo "exit status $?"; tail -n 2 out.txt | sed "s|$ROOT/||g"; ls ctrlc/*; echo
echo "\$ reinforce.py on ShortCorridor-v0 (all states look alike), 100,000 steps: greedy and sampled evaluation"
python "$ROOT/reinforce.py" --env-id user_envs:ShortCorridor-v0 --total-timesteps 100000 --runs-dir sc > out.txt 2>&1
echo "exit status $?"; tail -n 1 out.txt
ckpt=$(ls sc/*/reinforce.pt)
python "$ROOT/reinforce.py" --eval-checkpoint "$ckpt" --eval-episodes 100 2>&1 | tail -n 1
python "$ROOT/reinforce.py" --eval-checkpoint "$ckpt" --eval-episodes 100 --no-eval-greedy 2>&1 | tail -n 1
