"""gymnasium's RunningMeanStd.update against the same update written for a batch of one sample (as
NormalizeObservation and NormalizeReward call it once per env step): the statistics after 20,000
updates are compared bitwise, then each is timed twice, alternating. Evidence for README.md's
"The physical limit"; not used by the scripts. Output: rms_fast_path.txt beside it.

    python benchmark/results/env_speed/rms_fast_path.py
"""
import time, numpy as np
from gymnasium.wrappers.utils import RunningMeanStd

class Fast(RunningMeanStd):
    def update(self, x):
        if len(x) != 1:
            return super().update(x)
        delta = x[0] - self.mean  # a batch of one: its mean is x[0], its variance 0
        tot = self.count + 1
        self.mean, self.var, self.count = (self.mean + delta / tot,
                                           (self.var * self.count + np.square(delta) * self.count / tot) / tot, tot)

rng = np.random.default_rng(0)
for shape, make in (((17,), lambda: rng.normal(size=17) * 5), ((), lambda: np.array([rng.normal() * 3]))):
    a, b = RunningMeanStd(shape=shape), Fast(shape=shape)
    xs = [make() for _ in range(20000)]
    for x in xs:
        x = np.array([x]) if shape else x
        a.update(x); b.update(x)
    print(shape, "identical:", np.array_equal(a.mean, b.mean), np.array_equal(a.var, b.var), a.count == b.count)
    for cls in (RunningMeanStd, Fast, RunningMeanStd, Fast):
        r = cls(shape=shape); t = time.perf_counter()
        for x in xs:
            r.update(np.array([x]) if shape else x)
        print(cls.__name__, f"{(time.perf_counter() - t) / len(xs) * 1e6:.1f} us/update")
