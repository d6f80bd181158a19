"""FrozenLakeNotSlippery-v0, 20,000 steps, greedy success over 10 episodes, seeds 1-20 or 21-40, for
ppo.py and/or a2c.py with each entropy coefficient given, and extra Args fields; 2 processes. Made
frozen_lake_amd.txt beside it:

    SCRIPTS="ppo a2c" python frozen_lake_flags_sweep.py 0.0 0.01 0.05
    SCRIPTS=ppo EXTRA='{"norm_adv": False}' python frozen_lake_flags_sweep.py 0.0 0.01
    FIRST=21 SCRIPTS=ppo EXTRA='{"norm_adv": False}' python frozen_lake_flags_sweep.py 0.01
    FIRST=21 SCRIPTS=a2c python frozen_lake_flags_sweep.py 0.01
"""
import multiprocessing as mp
import os
import sys
import tempfile
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]
EXTRA = {}
def one(job):
    script, ent, seed = job
    import torch; torch.set_num_threads(1)
    import user_envs, importlib
    m = importlib.import_module(script)
    d = tempfile.mkdtemp()
    s = m.train(m.Args(env_id="user_envs:FrozenLakeNotSlippery-v0", total_timesteps=20000, seed=seed, eval_episodes=10,
                       ent_coef=ent, runs_dir=d, **EXTRA, save_model=False))
    return script, ent, seed, s["eval_return"], s["steps_to_threshold"]
SCRIPTS = os.environ.get("SCRIPTS", "ppo a2c").split()
EXTRA.update(eval(os.environ.get("EXTRA", "{}")))
if __name__ == "__main__":
    jobs = [(sc, e, s) for sc in SCRIPTS for e in map(float, sys.argv[1:]) for s in range(int(os.environ.get("FIRST", 1)), int(os.environ.get("FIRST", 1)) + 20)]
    with mp.Pool(2) as p:
        res = p.map(one, jobs)
    from collections import defaultdict
    g = defaultdict(list)
    for sc, e, s, r, t in res: g[(sc, e)].append((s, r, t))
    for k, v in g.items():
        print(k, "fails:", [s for s, r, t in v if r < 0.9], "steps_to_0.9 max:", max((t or 10**9) for s, r, t in v))
        print("   ", v)
