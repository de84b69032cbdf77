#!/usr/bin/python3
"""train_vs_torch.py — training and sampling speed of the shipped class-conditional UNet in nuance and
in PyTorch, measured in the same run on the same cores (issue 4 item 8).

nuance:  `nuance train --bench-steps N --json` (tools/cli/train.c): one warm-up step, then the median of
         N steps of forward + backward + clip_grad_norm_ + AdamW at the given batch on random images,
         then nu_gen_sample of --sample-batch images with --sample-steps euler_a steps under CFG.
PyTorch: the same network written below with torch.nn (UNet2DModel's structure as diffusers v0.27.2
         builds it: conv_in, sinusoidal time embedding + MLP, class embedding with a null row,
         ResnetBlock2D with GroupNorm/SiLU, self-attention at the chosen levels and in the mid block,
         stride-2 conv downsampling, nearest-upsampling + conv, skip concatenation), the same eps
         objective (linear betas, randint timesteps, MSE), clip_grad_norm_(1.0) and torch.optim.AdamW;
         sampling: k-diffusion's euler_ancestral over Karras sigmas with CFG on a doubled batch, as
         nuance runs it.
Both use --threads threads (torch.set_num_threads; nuance -t). The parameter counts are printed and must
agree (same architecture). Absolute numbers drift on a shared machine; the ratio is the result.

Usage: /usr/bin/python3 bench/train_vs_torch.py [--nuance build/nuance] [--threads 2] [--batch 64]
       [--widths 16,32,32 --attn 0,0,1 --layers 1 ...]     (defaults: the shipped MNIST UNet)
Needs Debian python3-torch; not run by the test suite.
"""
import argparse
import json
import math
import os
import subprocess
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


# ---------------------------------------------------------------- the network

def time_features(t, dim):
    """Sinusoidal embedding, cos first (flip_sin_to_cos=True, downscale_freq_shift=0)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
    a = t.float()[:, None] * freqs[None, :]
    return torch.cat([torch.cos(a), torch.sin(a)], dim=1)


class ResBlock(nn.Module):
    def __init__(self, cin, cout, temb, groups):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin, eps=1e-5)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.time_emb_proj = nn.Linear(temb, cout)
        self.norm2 = nn.GroupNorm(groups, cout, eps=1e-5)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x, emb):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time_emb_proj(F.silu(emb))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return (self.skip(x) if self.skip is not None else x) + h


class SelfAttention(nn.Module):
    def __init__(self, ch, head_dim, groups):
        super().__init__()
        self.norm = nn.GroupNorm(groups, ch, eps=1e-5)
        self.q, self.k, self.v, self.out = (nn.Linear(ch, ch) for _ in range(4))
        self.heads = ch // head_dim

    def forward(self, x):
        b, c, h, w = x.shape
        s = self.norm(x).reshape(b, c, h * w).transpose(1, 2)  # [B, T, C]

        def split(z):
            return z.reshape(b, h * w, self.heads, c // self.heads).transpose(1, 2)

        q, k, v = split(self.q(s)), split(self.k(s)), split(self.v(s))
        a = torch.softmax(q @ k.transpose(-1, -2) * (c // self.heads) ** -0.5, dim=-1)
        o = self.out((a @ v).transpose(1, 2).reshape(b, h * w, c))
        return x + o.transpose(1, 2).reshape(b, c, h, w)


class UNet(nn.Module):
    def __init__(self, cin, widths, attn, layers, groups, head_dim, classes, mid_attn=True):
        super().__init__()
        c0, temb, L = widths[0], 4 * widths[0], len(widths)
        self.c0, self.layers = c0, layers
        self.conv_in = nn.Conv2d(cin, c0, 3, padding=1)
        self.t1, self.t2 = nn.Linear(c0, temb), nn.Linear(temb, temb)
        self.label = nn.Embedding(classes + 1, temb)
        self.down = nn.ModuleList()
        skip_ch, prev = [c0], c0
        for i, w in enumerate(widths):
            lvl = nn.Module()
            lvl.res = nn.ModuleList([ResBlock(prev if j == 0 else w, w, temb, groups) for j in range(layers)])
            lvl.att = nn.ModuleList([SelfAttention(w, head_dim, groups) for _ in range(layers)]) if attn[i] else None
            skip_ch += [w] * layers
            lvl.downsample = nn.Conv2d(w, w, 3, stride=2, padding=1) if i < L - 1 else None
            if i < L - 1:
                skip_ch.append(w)
            prev = w
            self.down.append(lvl)
        self.mid1 = ResBlock(prev, prev, temb, groups)
        self.mid_att = SelfAttention(prev, head_dim, groups) if mid_attn else None
        self.mid2 = ResBlock(prev, prev, temb, groups)
        self.up = nn.ModuleList()
        for i, w in enumerate(reversed(widths)):
            lvl = nn.Module()
            res = []
            for j in range(layers + 1):
                res.append(ResBlock(prev + skip_ch.pop(), w, temb, groups))
                prev = w
            lvl.res = nn.ModuleList(res)
            lvl.att = nn.ModuleList([SelfAttention(w, head_dim, groups) for _ in range(layers + 1)]) \
                if attn[L - 1 - i] else None
            lvl.upsample = nn.Conv2d(w, w, 3, padding=1) if i < L - 1 else None
            self.up.append(lvl)
        self.norm_out = nn.GroupNorm(groups, c0, eps=1e-5)
        self.conv_out = nn.Conv2d(c0, cin, 3, padding=1)

    def forward(self, x, t, y):
        emb = self.t2(F.silu(self.t1(time_features(t, self.c0)))) + self.label(y)
        h = self.conv_in(x)
        skips = [h]
        for lvl in self.down:
            for j, r in enumerate(lvl.res):
                h = r(h, emb)
                if lvl.att is not None:
                    h = lvl.att[j](h)
                skips.append(h)
            if lvl.downsample is not None:
                h = lvl.downsample(h)
                skips.append(h)
        h = self.mid1(h, emb)
        if self.mid_att is not None:
            h = self.mid_att(h)
        h = self.mid2(h, emb)
        for lvl in self.up:
            for j, r in enumerate(lvl.res):
                h = r(torch.cat([h, skips.pop()], dim=1), emb)
                if lvl.att is not None:
                    h = lvl.att[j](h)
            if lvl.upsample is not None:
                h = lvl.upsample(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.conv_out(F.silu(self.norm_out(h)))


# ---------------------------------------------------------------- timing

def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


def torch_train(model, a):
    """Median seconds of one eps-objective training step (forward, backward, clipping, AdamW)."""
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float32)
    ab = torch.cumprod(1 - betas, 0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(a.batch, a.channels, a.resolution, a.resolution, generator=g) * 2 - 1
    y = torch.arange(a.batch) % a.classes
    times = []
    for s in range(a.steps + 1):
        t0 = time.perf_counter()
        t = torch.randint(0, 1000, (a.batch,), generator=g)
        noise = torch.randn(x0.shape, generator=g)
        keep = torch.rand(a.batch, generator=g) >= 0.1  # label dropout for CFG
        yy = torch.where(keep, y, torch.full_like(y, a.classes))
        s_ab = ab[t].sqrt()[:, None, None, None]
        s_1m = (1 - ab[t]).sqrt()[:, None, None, None]
        loss = F.mse_loss(model(s_ab * x0 + s_1m * noise, t.float(), yy), noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if s > 0:
            times.append(time.perf_counter() - t0)
    return median(times)


@torch.no_grad()
def torch_sample(model, a):
    """Seconds for k-diffusion euler_ancestral (eta 1) over Karras sigmas with CFG, as nuance samples."""
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    ab = torch.cumprod(1 - betas, 0)
    sig_t = ((1 - ab) / ab).sqrt()  # sigma of each training timestep
    log_sig = sig_t.log()
    rho, n = 7.0, a.sample_steps
    smin, smax = sig_t[0].item(), sig_t[-1].item()
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    sigmas = (smax ** (1 / rho) + ramp * (smin ** (1 / rho) - smax ** (1 / rho))) ** rho
    sigmas = torch.cat([sigmas, torch.zeros(1, dtype=torch.float64)])
    B = a.sample_batch
    y = torch.arange(B) % a.classes
    labels = torch.cat([y, torch.full_like(y, a.classes)])
    g = torch.Generator().manual_seed(0)

    def denoise(x, sigma):
        ls = math.log(sigma)  # sigma -> fractional timestep (k-diffusion sigma_to_t)
        i = int(torch.searchsorted(log_sig, torch.tensor([ls], dtype=torch.float64)).clamp(1, 999) - 1)
        w = (log_sig[i] - ls) / (log_sig[i] - log_sig[i + 1])
        t = (1 - w.clamp(0, 1)) * i + w.clamp(0, 1) * (i + 1)
        c_in = 1.0 / math.sqrt(sigma * sigma + 1)
        xx = torch.cat([x, x]) * c_in
        eps = model(xx, torch.full((2 * B,), float(t)), labels)
        cond, unc = eps[:B], eps[B:]
        return x - sigma * (unc + a.cfg * (cond - unc))

    t0 = time.perf_counter()
    x = torch.randn(B, a.channels, a.resolution, a.resolution, generator=g) * sigmas[0].item()
    for i in range(n):
        s, sn = sigmas[i].item(), sigmas[i + 1].item()
        d0 = denoise(x, s)
        up = min(sn, math.sqrt(max(sn * sn * (s * s - sn * sn) / (s * s), 0.0)))
        down = math.sqrt(sn * sn - up * up)
        x = x + (x - d0) / s * (down - s)
        if sn > 0:
            x = x + torch.randn(x.shape, generator=g) * up
    return time.perf_counter() - t0


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--nuance", default=os.path.join(root, "build", "nuance"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=5, help="timed training steps (after one warm-up)")
    p.add_argument("--widths", default="16,32,32")
    p.add_argument("--attn", default="0,0,1")
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--groups", type=int, default=8)
    p.add_argument("--head-dim", type=int, default=8)
    p.add_argument("--resolution", type=int, default=28)
    p.add_argument("--channels", type=int, default=1)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--sample-batch", type=int, default=64)
    p.add_argument("--sample-steps", type=int, default=20)
    p.add_argument("--cfg", type=float, default=3.0)
    a = p.parse_args()
    widths = [int(v) for v in a.widths.split(",")]
    attn = [v.strip() not in ("0", "") for v in a.attn.split(",")]

    if not os.access(a.nuance, os.X_OK):
        sys.exit(f"train_vs_torch.py: {a.nuance} not found; build first (make build) or pass --nuance")
    cmd = [a.nuance, "train", "--bench-steps", str(a.steps), "--json", "-t", str(a.threads), "--batch", str(a.batch),
           "--widths", a.widths, "--attn", a.attn, "--layers", str(a.layers), "--groups", str(a.groups),
           "--head-dim", str(a.head_dim), "--resolution", str(a.resolution), "--image-channels", str(a.channels),
           "--classes", str(a.classes), "--bench-sample-batch", str(a.sample_batch),
           "--bench-sample-steps", str(a.sample_steps), "--sampler", "euler_a"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    nu = json.loads(out.strip().splitlines()[-1])

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = UNet(a.channels, widths, attn, a.layers, a.groups, a.head_dim, a.classes)
    n_torch = sum(p.numel() for p in model.parameters())
    t_train = torch_train(model, a)
    model.eval()
    t_sample = torch_sample(model, a)

    tr_nu, tr_pt = nu["train_images_per_s"], a.batch / t_train
    sa_nu, sa_pt = nu["sample_images_per_s"], a.sample_batch / t_sample
    print(f"UNet widths {widths} attention {[int(v) for v in attn]} layers {a.layers}, {a.channels}x{a.resolution}x"
          f"{a.resolution}, {a.classes} classes; {a.threads} threads; torch {torch.__version__}")
    print(f"parameters: nuance {nu['params']}, PyTorch {n_torch}" + ("" if nu["params"] == n_torch else "  (MISMATCH)"))
    print(f"{'':34s}{'nuance':>10s}{'PyTorch':>10s}{'ratio':>8s}")
    print(f"{'train step (fwd+bwd+AdamW), b=' + str(a.batch):34s}{nu['train_step_s'] * 1e3:8.1f}ms{t_train * 1e3:8.1f}ms"
          f"{t_train / nu['train_step_s']:7.2f}x")
    print(f"{'train images/s':34s}{tr_nu:10.1f}{tr_pt:10.1f}{tr_nu / tr_pt:7.2f}x")
    print(f"{'sample images/s (' + str(a.sample_steps) + ' euler_a, CFG)':34s}{sa_nu:10.2f}{sa_pt:10.2f}"
          f"{sa_nu / sa_pt:7.2f}x")
    if nu["params"] != n_torch:
        sys.exit(1)


if __name__ == "__main__":
    main()
