"""Does torch.compile pay in a2c.py? One a2c_update on a batch of a2c.py's CartPole defaults (8 envs x 5
steps), eager against the whole a2c_update under torch.compile: the median of 5 timings of 400 updates,
and the first call's seconds (the compile). Evidence for README.md; not used by the scripts. Output:
a2c_compile.txt beside it.

    python benchmark/results/speed_compile/a2c_compile.py
"""
import os, sys, time, torch
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))
import a2c, gymnasium as gym
torch.set_num_threads(1)
args = a2c.Args()
T, N = 5, 8
g = torch.Generator().manual_seed(0)
batch = {"obs": torch.randn(T, N, 4, generator=g), "actions": torch.randint(0, 2, (T, N), generator=g),
         "advantages": torch.randn(T, N, generator=g), "returns": torch.randn(T, N, generator=g), "values": torch.randn(T, N, generator=g)}
def bench(label, fn, n=2000):
    t0 = time.perf_counter(); fn(); first = time.perf_counter() - t0
    for _ in range(100): fn()
    ts = []
    for r in range(5):
        t = time.perf_counter()
        for _ in range(n // 5): fn()
        ts.append((time.perf_counter() - t) / (n // 5) * 1e6)
    ts.sort(); print(f"{label:30s} median {ts[2]:7.1f} us  (first call {first:.1f} s)", flush=True)
torch.manual_seed(0); ag = a2c.Agent(4, gym.spaces.Discrete(2)); opt = a2c.make_optimizer(ag, args)
bench("eager a2c_update", lambda: a2c.a2c_update(ag, opt, batch, args))
cu = torch.compile(a2c.a2c_update)
bench("compiled a2c_update", lambda: cu(ag, opt, batch, args))
