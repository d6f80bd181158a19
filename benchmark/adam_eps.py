"""How close a run's gradients come to Adam's ε, read from its checkpoint (issue 23, difference B5).

Adam moves each parameter by lr · m̂ / (√v̂ + ε). Scaling the loss by c scales m̂ and √v̂ by c, so it
changes nothing while √v̂ ≫ ε; where √v̂ is near ε, a loss c times larger is the same as ε / c. Our
trpo.py fits its critic on ½·mean((V - R̂)²), sb3-contrib on mean((V - R̂)²): theirs is ours with ε / 2.
This prints, for each checkpoint, quantiles of √v̂ over the optimizer's parameters, and the fraction of
a full Adam step each side takes at those quantiles: √v̂ / (√v̂ + ε) for ours, 2√v̂ / (2√v̂ + ε) for a
loss twice as large.

    python benchmark/adam_eps.py 'benchmark/runs/mujoco/trpo*/Hopper-v5/seed_*/*/trpo.pt' [--out FILE.json]
"""
import argparse
import glob
import json

import torch

QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


def gradient_rms(optimizer_state):
    """√v̂ of every parameter an Adam state holds, bias-corrected, and the ε it ran with."""
    group = optimizer_state["param_groups"][0]
    beta2, eps = group["betas"][1], group["eps"]
    rms = [(s["exp_avg_sq"] / (1 - beta2 ** float(s["step"]))).sqrt().flatten()
           for s in optimizer_state["state"].values()]
    return torch.cat(rms).double(), eps


def measure(path):
    rms, eps = gradient_rms(torch.load(path, map_location="cpu", weights_only=False)["optimizer"])
    q = torch.quantile(rms, torch.tensor(QUANTILES, dtype=torch.double)).tolist()
    return {"checkpoint": path, "eps": eps, "parameters": rms.numel(),
            "sqrt_v_quantiles": dict(zip(map(str, QUANTILES), q)),
            "fraction_below_10_eps": float((rms < 10 * eps).double().mean()),
            "step_fraction_ours": [v / (v + eps) for v in q],
            "step_fraction_loss_x2": [2 * v / (2 * v + eps) for v in q]}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoints", help="a glob of checkpoints (quote it)")
    parser.add_argument("--out", help="also write the results here as JSON")
    args = parser.parse_args()
    paths = sorted(glob.glob(args.checkpoints))
    if not paths:
        parser.error(f"no checkpoint matches {args.checkpoints}")
    results = [measure(p) for p in paths]
    print(f"quantiles {QUANTILES} of sqrt(v); step fraction ours -> loss x2")
    for r in results:
        q = r["sqrt_v_quantiles"].values()
        steps = " ".join(f"{a:.2f}->{b:.2f}" for a, b in zip(r["step_fraction_ours"], r["step_fraction_loss_x2"]))
        print(f"{r['checkpoint']}\n  eps {r['eps']:.0e}  sqrt(v) " + " ".join(f"{v:.1e}" for v in q)
              + f"  below 10 eps {r['fraction_below_10_eps']:.0%}\n  step {steps}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)
