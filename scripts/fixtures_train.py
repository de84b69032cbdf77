#!/usr/bin/python3
"""fixtures_train.py — PyTorch reference trajectories for the trainer (src/train/optim.c): a tiny
MLP (Linear 6->16, GELU, Linear 16->5) trained 20 steps with torch.optim.AdamW,
torch.nn.utils.clip_grad_norm_ and a LambdaLR warm-up + cosine schedule (transformers'
get_cosine_schedule_with_warmup formula), plus two EMA tracks with diffusers' EMAModel decay rules
(written out below: diffusers is not in Debian).

Two runs:
  ce   cross-entropy, lr 1e-2, betas (0.9, 0.99), eps 1e-8, weight decay 0.1, warm-up 4, cosine to
       step 20, clip_grad_norm_(0.5) (active on most steps); EMA a: decay 0.95 with diffusers'
       default (1+s)/(10+s) warm-up; EMA b: decay 0.999, use_ema_warmup (inv_gamma 1, power 2/3),
       update_after_step 3.
  mse  MSE regression, lr 3e-3, default betas, no weight decay, constant LR, no clipping.
Stored per run: inputs and targets of every step, initial and final parameters (state_dict names),
final exp_avg / exp_avg_sq, per-step loss (before the update), learning rate and gradient norm
(before clipping), final EMA weights.
Writes tests/fixtures/train.safetensors (read by tests/test_train.c).
Run: /usr/bin/python3 scripts/fixtures_train.py   (Debian python3-torch 1.13, CPU, float32)
"""
import math
import os

import torch
from st_write import save

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "train.safetensors")
D_IN, HID, D_OUT, B, STEPS = 6, 16, 5, 16, 20


def cosine_lambda(warmup, total, constant=False):
    def f(step):
        if step < warmup:
            return float(step) / float(max(1, warmup))
        if constant:
            return 1.0
        progress = float(step - warmup) / float(max(1, total - warmup))
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * 0.5 * 2.0 * progress)))
    return f


class EMA:
    """diffusers.training_utils.EMAModel: get_decay() and step() semantics."""

    def __init__(self, params, decay, min_decay=0.0, update_after_step=0, use_ema_warmup=False, inv_gamma=1.0,
                 power=2 / 3):
        self.shadow = [p.detach().clone() for p in params]
        self.decay, self.min_decay, self.update_after_step = decay, min_decay, update_after_step
        self.use_ema_warmup, self.inv_gamma, self.power = use_ema_warmup, inv_gamma, power
        self.optimization_step = 0

    def get_decay(self, optimization_step):
        step = max(0, optimization_step - self.update_after_step - 1)
        if step <= 0:
            return 0.0
        if self.use_ema_warmup:
            cur = 1 - (1 + step / self.inv_gamma) ** -self.power
        else:
            cur = (1 + step) / (10 + step)
        cur = min(cur, self.decay)
        return max(cur, self.min_decay)

    @torch.no_grad()
    def step(self, params):
        self.optimization_step += 1
        one_minus_decay = 1 - self.get_decay(self.optimization_step)
        for s, p in zip(self.shadow, params):
            s.sub_(one_minus_decay * (s - p))


def run(out, tag, loss_kind, lr, betas, wd, warmup, total, constant, clip, emas):
    fc1, fc2 = torch.nn.Linear(D_IN, HID), torch.nn.Linear(HID, D_OUT)
    named = {"fc1.weight": fc1.weight, "fc1.bias": fc1.bias, "fc2.weight": fc2.weight, "fc2.bias": fc2.bias}
    for k, v in named.items():
        out[f"{tag}.init.{k}"] = v.detach().clone()
    params = list(named.values())
    opt = torch.optim.AdamW(params, lr=lr, betas=betas, eps=1e-8, weight_decay=wd)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine_lambda(warmup, total, constant))
    ema_objs = [EMA(params, **e) for e in emas]
    xs = torch.randn(STEPS, B, D_IN) * 1.5
    if loss_kind == "ce":
        ys = torch.randint(0, D_OUT, (STEPS, B))
    else:
        ys = torch.randn(STEPS, B, D_OUT)
    losses, lrs, norms = [], [], []
    for s in range(STEPS):
        opt.zero_grad()
        h = torch.nn.functional.gelu(fc1(xs[s]))
        y = fc2(h)
        loss = torch.nn.functional.cross_entropy(y, ys[s]) if loss_kind == "ce" else torch.nn.functional.mse_loss(y, ys[s])
        loss.backward()
        if clip > 0:
            n = torch.nn.utils.clip_grad_norm_(params, clip)
        else:
            n = torch.norm(torch.stack([torch.norm(p.grad) for p in params]))
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
        for e in ema_objs:
            e.step(params)
        losses.append(loss.item())
        norms.append(float(n))
    out[f"{tag}.x"] = xs
    out[f"{tag}.y"] = ys
    out[f"{tag}.loss"] = torch.tensor(losses, dtype=torch.float32)
    out[f"{tag}.lr"] = torch.tensor(lrs, dtype=torch.float64)
    out[f"{tag}.gnorm"] = torch.tensor(norms, dtype=torch.float32)
    for k, v in named.items():
        st = opt.state[v]
        out[f"{tag}.final.{k}"] = v.detach().clone()
        out[f"{tag}.m.{k}"] = st["exp_avg"]
        out[f"{tag}.v.{k}"] = st["exp_avg_sq"]
        for i, e in enumerate(ema_objs):
            out[f"{tag}.ema{i}.{k}"] = e.shadow[list(named).index(k)]
    print(tag, "loss", [round(x, 5) for x in losses])
    print(tag, "gnorm", [round(x, 4) for x in norms])


def main():
    torch.manual_seed(20240611)
    out = {}
    run(out, "ce", "ce", 1e-2, (0.9, 0.99), 0.1, 4, 20, False, 0.5,
        [dict(decay=0.95), dict(decay=0.999, use_ema_warmup=True, inv_gamma=1.0, power=2 / 3, update_after_step=3)])
    run(out, "mse", "mse", 3e-3, (0.9, 0.999), 0.0, 0, 20, True, 0.0, [])
    save(OUT, out)
    print("wrote", OUT, os.path.getsize(OUT), "bytes")


if __name__ == "__main__":
    main()
