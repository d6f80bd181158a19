#!/usr/bin/env bash
# The faults of issue 19 on a2c.py, as a user meets them: SIGTERM, kill -9, a truncated checkpoint,
# a full disk (a real 300 KiB tmpfs, so run it as root) and a full disk during a checkpoint's save
# (tests/full_disk.py). Prints what each leaves and the exit status.
#
#     bash benchmark/faults_demo.sh ROOT LABEL     # ROOT: a checkout (e.g. a git worktree), LABEL: a name
#
# Results: benchmark/results/faults/ (before and after the change).
HERE=$(cd "$(dirname "$0")/.." && pwd); ROOT=$(cd "$1" && pwd); L=$2; W=/tmp/faults_demo/$L; rm -rf "$W"; mkdir -p "$W"; cd "$W" || exit 1
EVERY() { grep -q checkpoint_every "$ROOT/a2c.py" && echo "--checkpoint-every $1"; }  # absent before
PY="python $ROOT/a2c.py --env-id CartPole-v1 --total-timesteps 5000000"
echo "== 1. SIGTERM after 8 s: $PY --runs-dir term"
$PY --runs-dir term > term.out 2>&1 & p=$!; sleep 8; kill -TERM $p; wait $p; echo "exit status $?"
tail -n 3 term.out; echo "left:"; ls term/*
echo "== 2. kill -9 after 8 s: $PY --runs-dir kill $(EVERY 3)"
$PY --runs-dir kill $(EVERY 3) > kill.out 2>&1 & p=$!; sleep 8; kill -9 $p; wait $p 2>/dev/null
echo "exit status $?"; echo "left:"; ls kill/*
d=$(ls -d kill/*); echo "then: python a2c.py --resume $d --total-timesteps 60000"
python "$ROOT/a2c.py" --resume "$d" --total-timesteps 60000 > resume.out 2>&1; echo "exit status $?"
tail -n 3 resume.out
echo "== 3. a truncated checkpoint: head -c 3000 a2c.pt > half.pt; python a2c.py --resume half.pt"
python "$ROOT/a2c.py" --env-id CartPole-v1 --total-timesteps 2000 --runs-dir good > /dev/null 2>&1
head -c 3000 good/*/a2c.pt > half.pt
python "$ROOT/a2c.py" --resume half.pt > half.out 2>&1; echo "exit status $?, $(wc -l < half.out) lines"
tail -n 2 half.out
PY="python $ROOT/a2c.py --env-id CartPole-v1 --total-timesteps 30000"
echo "== 4. a full disk (a 300 KiB tmpfs as the runs directory): $PY --runs-dir full $(EVERY 1)"
mkdir -p full; mount -t tmpfs -o size=300k tmpfs full
$PY --runs-dir full $(EVERY 1) > full.out 2>&1; echo "exit status $?, $(wc -l < full.out) lines"
tail -n 2 full.out | cut -c1-200; echo "left:"; ls -l full/* | cut -c1-200
for f in full/*/a2c.pt; do [ -f "$f" ] && python -c "import sys, torch
print('a2c.pt loads: global_step', torch.load(sys.argv[1], weights_only=False)['global_step'])" "$f"; done
umount full
d=$(ls -d good/*); cp "$d/a2c.pt" saved_before.pt
echo "== 5. the disk fills while the checkpoint is saved: python tests/full_disk.py a2c.py --resume $d/a2c.pt --total-timesteps 4000"
cp "$HERE/tests/full_disk.py" "$ROOT/tests/full_disk_demo.py"  # runs $ROOT's a2c.py
python "$ROOT/tests/full_disk_demo.py" a2c.py --resume "$d/a2c.pt" --total-timesteps 4000 > fd.out 2>&1
echo "exit status $?, $(wc -l < fd.out) lines"; tail -n 2 fd.out | cut -c1-250; echo "left:"; ls "$d"
cmp -s "$d/a2c.pt" saved_before.pt && echo "a2c.pt: unchanged"
rm -f "$ROOT/tests/full_disk_demo.py"
