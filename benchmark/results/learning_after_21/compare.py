"""Did issue 21's speed changes change what training computes? Every learning test was rerun over seeds 1-3
on AMD EPYC after them (`python benchmark/learning_bounds.py --seeds 1-3`, its records moved here as
amd-epyc_seeds1-3.jsonl); this compares each record with the last one of the same test, parameters and
seed in ../learning_bounds/amd-epyc.jsonl, made before them on AMD EPYC. Output: compare.txt beside it.

    python benchmark/results/learning_after_21/compare.py
"""
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
key = lambda r: (r["test"], json.dumps(r["params"], sort_keys=True), r["seed"])
values = lambda r: {k: v for k, v in r.items() if k not in ("test", "params", "seed")}
before = {}
with open(os.path.join(HERE, "..", "learning_bounds", "amd-epyc.jsonl")) as f:
    for line in f:
        record = json.loads(line)
        before[key(record)] = record
same, different = 0, []
with open(os.path.join(HERE, "amd-epyc_seeds1-3.jsonl")) as f:
    for line in f:
        record = json.loads(line)
        if values(record) == values(before[key(record)]):
            same += 1
        else:
            different.append((key(record), values(record), values(before[key(record)])))
print(f"{same + len(different)} records after, each against the one before: {same} equal, {len(different)} different")
for k, after, earlier in different:
    print(k, "after", after, "before", earlier)
