#!/usr/bin/python3
"""fixtures_gen_models.py — PyTorch references for the trainable generative models
(src/models/pixel_unet.c, src/models/dit.c, src/train/objectives.c).

The two networks are written out below with diffusers v0.27.2's module structure and state_dict
names (diffusers is not in Debian): UNet2DModel (ResnetBlock2D, Attention with group norm,
Down/AttnDown/Mid/Up/AttnUp blocks, positional time embedding, class embedding) and
Transformer2DModel(norm_type="ada_norm_zero") as DiTPipeline uses it (PatchEmbed + 2-D sin-cos,
per-block CombinedTimestepLabelEmbeddings, AdaLayerNormZero, GELU-tanh FeedForward, proj_out_1/2,
unpatchify). Attention is written as softmax(q k^T / sqrt(d)) v (torch 1.13 has no SDPA).

Tiny configurations (kept in sync with tests/test_gen_models.c):
  unet: in 1, 8x8, block_out_channels (4, 8), attention at level 1 and mid, 1 layer per block,
        4 groups, head dim 4, 3 classes (+ null row), time embedding 16.
  dit:  in 2, out 4 (learned sigma: the loss uses channels 0..1), 8x8, patch 2, 2 blocks,
        2 heads x 8, ff x4, 3 classes (+ null row).
Initial values: uniform(-b, b) with b = 1/sqrt(fan_in) for every weight and bias (norm weights
1 + U(-0.1, 0.1), biases U(-0.1, 0.1), embeddings N(0, 1)); the adaLN-Zero and output layers are
NOT zero so every gradient is informative. Every value is rounded to float16 (stored F16, read
back exactly as float32).

Objective randomness: torch.Generator().manual_seed(seed) drawn as nu_gen_loss_prepare does:
  1. timesteps: randint(0, T, (B,)) (eps/v) | rand(B) (flow uniform) | sigmoid(randn(B)*s + m)
  2. noise: randn(B, C, H, W)
  3. label dropout: rand(B) < p -> null label
Cases (batch 4, fixed clean images x0 in [-1, 1] and labels):
  unet_eps   eps-prediction, linear betas, label dropout 0.5: inputs, loss, every gradient;
             and a 20-step AdamW trajectory (lr 2e-3, wd 0.01, clip_grad_norm_ 1.0)
  dit_flow   flow matching, uniform t, dropout 0.25: the same
  unet_v_cos v-prediction, cosine betas, dropout 0: inputs and loss
  dit_flow_ln flow matching, logit-normal t (mean 0.5, std 0.8), dropout 0: inputs and loss
Writes tests/fixtures/gen_models.safetensors.
Run: /usr/bin/python3 scripts/fixtures_gen_models.py   (Debian python3-torch 1.13, CPU, float32)
"""
import math
import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from st_write import save

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "gen_models.safetensors")
torch.set_num_threads(1)
B = 4


def timestep_embedding(t, dim, flip, shift):
    """diffusers get_timestep_embedding (max_period 10000, scale 1)."""
    half = dim // 2
    exponent = -math.log(10000) * torch.arange(start=0, end=half, dtype=torch.float32)
    exponent = exponent / (half - shift)
    emb = torch.exp(exponent)
    emb = t[:, None].float() * emb[None, :]
    emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=-1)
    if flip:
        emb = torch.cat([emb[:, half:], emb[:, :half]], dim=-1)
    return emb


def attention(x, to_q, to_k, to_v, to_out, heads):
    Bn, T, D = x.shape
    hd = D // heads
    q = to_q(x).view(Bn, T, heads, hd).transpose(1, 2)
    k = to_k(x).view(Bn, T, heads, hd).transpose(1, 2)
    v = to_v(x).view(Bn, T, heads, hd).transpose(1, 2)
    a = torch.softmax(q @ k.transpose(-1, -2) * (hd ** -0.5), dim=-1)
    o = (a @ v).transpose(1, 2).reshape(Bn, T, D)
    return to_out[0](o)


# ---------------------------------------------------------------- UNet2DModel

class Resnet(nn.Module):
    def __init__(self, cin, cout, te, G, eps):
        super().__init__()
        self.norm1 = nn.GroupNorm(G, cin, eps=eps)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.time_emb_proj = nn.Linear(te, cout)
        self.norm2 = nn.GroupNorm(G, cout, eps=eps)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x, temb):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time_emb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        return x + h


class Attn(nn.Module):
    def __init__(self, C, head_dim, G, eps):
        super().__init__()
        self.group_norm = nn.GroupNorm(G, C, eps=eps)
        self.to_q, self.to_k, self.to_v = nn.Linear(C, C), nn.Linear(C, C), nn.Linear(C, C)
        self.to_out = nn.ModuleList([nn.Linear(C, C), nn.Dropout(0.0)])
        self.heads = C // head_dim

    def forward(self, x):
        Bn, C, H, W = x.shape
        h = x.view(Bn, C, H * W).transpose(1, 2)
        h = self.group_norm(h.transpose(1, 2)).transpose(1, 2)
        o = attention(h, self.to_q, self.to_k, self.to_v, self.to_out, self.heads)
        o = o.transpose(-1, -2).reshape(Bn, C, H, W)
        return o + x


class Conv(nn.Module):  # Downsample2D / Upsample2D hold their conv as .conv
    def __init__(self, c, stride):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, stride=stride, padding=1)


class Block(nn.Module):
    pass


class UNet(nn.Module):
    def __init__(self, cin, boc, attn, lpb, G, eps, head_dim, num_classes, mid_attn=True):
        super().__init__()
        C0, TE, L = boc[0], 4 * boc[0], len(boc)
        self.C0, self.lpb, self.attn = C0, lpb, attn
        self.conv_in = nn.Conv2d(cin, C0, 3, padding=1)
        self.time_embedding = nn.Module()
        self.time_embedding.linear_1 = nn.Linear(C0, TE)
        self.time_embedding.linear_2 = nn.Linear(TE, TE)
        self.class_embedding = nn.Embedding(num_classes + 1, TE)
        self.down_blocks = nn.ModuleList()
        out = C0
        for i in range(L):
            cin_b, out = out, boc[i]
            b = Block()
            b.resnets = nn.ModuleList([Resnet(cin_b if j == 0 else out, out, TE, G, eps) for j in range(lpb)])
            if attn[i]:
                b.attentions = nn.ModuleList([Attn(out, head_dim, G, eps) for _ in range(lpb)])
            if i < L - 1:
                b.downsamplers = nn.ModuleList([Conv(out, 2)])
            self.down_blocks.append(b)
        self.mid_block = Block()
        self.mid_block.resnets = nn.ModuleList([Resnet(boc[-1], boc[-1], TE, G, eps) for _ in range(2)])
        self.mid_block.attentions = nn.ModuleList([Attn(boc[-1], head_dim, G, eps)]) if mid_attn else None
        self.up_blocks = nn.ModuleList()
        rev = list(reversed(boc))
        out = rev[0]
        for i in range(L):
            prev, out, inp = out, rev[i], rev[min(i + 1, L - 1)]
            b = Block()
            b.resnets = nn.ModuleList([
                Resnet((prev if j == 0 else out) + (inp if j == lpb else out), out, TE, G, eps) for j in range(lpb + 1)])
            if attn[L - 1 - i]:
                b.attentions = nn.ModuleList([Attn(out, head_dim, G, eps) for _ in range(lpb + 1)])
            if i < L - 1:
                b.upsamplers = nn.ModuleList([Conv(out, 1)])
            self.up_blocks.append(b)
        self.conv_norm_out = nn.GroupNorm(G, C0, eps=eps)
        self.conv_out = nn.Conv2d(C0, cin, 3, padding=1)

    def forward(self, x, t, y):
        L = len(self.down_blocks)
        emb = self.time_embedding.linear_1(timestep_embedding(t, self.C0, True, 0))
        emb = self.time_embedding.linear_2(F.silu(emb))
        emb = emb + self.class_embedding(y)
        h = self.conv_in(x)
        skips = [h]
        for i, b in enumerate(self.down_blocks):
            for j in range(self.lpb):
                h = b.resnets[j](h, emb)
                if hasattr(b, "attentions"):
                    h = b.attentions[j](h)
                skips.append(h)
            if hasattr(b, "downsamplers"):
                h = b.downsamplers[0].conv(h)
                skips.append(h)
        h = self.mid_block.resnets[0](h, emb)
        if self.mid_block.attentions is not None:
            h = self.mid_block.attentions[0](h)
        h = self.mid_block.resnets[1](h, emb)
        for i, b in enumerate(self.up_blocks):
            for j in range(self.lpb + 1):
                h = torch.cat([h, skips.pop()], dim=1)
                h = b.resnets[j](h, emb)
                if hasattr(b, "attentions"):
                    h = b.attentions[j](h)
            if hasattr(b, "upsamplers"):
                h = b.upsamplers[0].conv(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.conv_out(F.silu(self.conv_norm_out(h)))


# ---------------------------------------------------------------- Transformer2DModel (DiT)

def sincos_2d(D, g):
    """diffusers get_2d_sincos_pos_embed(D, g, base_size=g, interpolation_scale=1)."""
    grid_h = np.arange(g, dtype=np.float32) / (g / g) / 1.0
    grid_w = np.arange(g, dtype=np.float32) / (g / g) / 1.0
    grid = np.stack(np.meshgrid(grid_w, grid_h), axis=0).reshape([2, 1, g, g])

    def one(d, pos):
        omega = np.arange(d // 2, dtype=np.float64)
        omega /= d / 2.0
        omega = 1.0 / 10000 ** omega
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    emb = np.concatenate([one(D // 2, grid[0]), one(D // 2, grid[1])], axis=1)
    return torch.from_numpy(emb).float().unsqueeze(0)


class GeluProj(nn.Module):
    def __init__(self, a, b):
        super().__init__()
        self.proj = nn.Linear(a, b)

    def forward(self, x):
        return F.gelu(self.proj(x), approximate="tanh")


class DiTBlock(nn.Module):
    def __init__(self, D, heads, ff, num_classes, eps):
        super().__init__()
        self.norm1 = nn.Module()
        self.norm1.emb = nn.Module()
        self.norm1.emb.timestep_embedder = nn.Module()
        self.norm1.emb.timestep_embedder.linear_1 = nn.Linear(256, D)
        self.norm1.emb.timestep_embedder.linear_2 = nn.Linear(D, D)
        self.norm1.emb.class_embedder = nn.Module()
        self.norm1.emb.class_embedder.embedding_table = nn.Embedding(num_classes + 1, D)
        self.norm1.linear = nn.Linear(D, 6 * D)
        self.attn1 = nn.Module()
        self.attn1.to_q, self.attn1.to_k, self.attn1.to_v = nn.Linear(D, D), nn.Linear(D, D), nn.Linear(D, D)
        self.attn1.to_out = nn.ModuleList([nn.Linear(D, D), nn.Dropout(0.0)])
        self.ff = nn.Module()
        self.ff.net = nn.ModuleList([GeluProj(D, ff * D), nn.Dropout(0.0), nn.Linear(ff * D, D)])
        self.heads, self.eps = heads, eps

    def emb(self, t, y):
        e = self.norm1.emb.timestep_embedder
        te = e.linear_2(F.silu(e.linear_1(timestep_embedding(t, 256, True, 1))))
        return te + self.norm1.emb.class_embedder.embedding_table(y)

    def forward(self, x, t, y):
        c = self.emb(t, y)
        sh_msa, sc_msa, g_msa, sh_mlp, sc_mlp, g_mlp = self.norm1.linear(F.silu(c)).chunk(6, dim=1)
        n = F.layer_norm(x, (x.shape[-1],), eps=1e-6) * (1 + sc_msa[:, None]) + sh_msa[:, None]
        a = attention(n, self.attn1.to_q, self.attn1.to_k, self.attn1.to_v, self.attn1.to_out, self.heads)
        x = g_msa.unsqueeze(1) * a + x
        n = F.layer_norm(x, (x.shape[-1],), eps=self.eps)
        n = n * (1 + sc_mlp[:, None]) + sh_mlp[:, None]
        f = self.ff.net[2](self.ff.net[0](n))
        return g_mlp.unsqueeze(1) * f + x


class DiT(nn.Module):
    def __init__(self, cin, cout, S, P, layers, heads, head_dim, ff, num_classes, eps=1e-5):
        super().__init__()
        D = heads * head_dim
        self.P, self.cout = P, cout
        self.pos_embed = nn.Module()
        self.pos_embed.proj = nn.Conv2d(cin, D, P, stride=P)
        self.register_buffer("pos", sincos_2d(D, S // P), persistent=False)
        self.transformer_blocks = nn.ModuleList([DiTBlock(D, heads, ff, num_classes, eps) for _ in range(layers)])
        self.proj_out_1 = nn.Linear(D, 2 * D)
        self.proj_out_2 = nn.Linear(D, P * P * cout)

    def forward(self, x, t, y):
        h = self.pos_embed.proj(x).flatten(2).transpose(1, 2) + self.pos
        for b in self.transformer_blocks:
            h = b(h, t, y)
        c = self.transformer_blocks[0].emb(t, y)
        shift, scale = self.proj_out_1(F.silu(c)).chunk(2, dim=1)
        h = F.layer_norm(h, (h.shape[-1],), eps=1e-6) * (1 + scale[:, None]) + shift[:, None]
        h = self.proj_out_2(h)
        g = int(h.shape[1] ** 0.5)
        h = h.reshape(-1, g, g, self.P, self.P, self.cout)
        h = torch.einsum("nhwpqc->nchpwq", h)
        return h.reshape(-1, self.cout, g * self.P, g * self.P)


# ---------------------------------------------------------------- init, objectives

def init_params(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name == "class_embedding.weight" or name.endswith("embedding_table.weight"):
                v = torch.randn(p.shape, generator=g)
            elif p.dim() == 1 and ("norm" in name) and name.endswith(".weight"):
                v = 1 + (torch.rand(p.shape, generator=g) * 0.2 - 0.1)
            elif p.dim() == 1:
                v = torch.rand(p.shape, generator=g) * 0.2 - 0.1
            else:
                fan_in = p[0].numel()
                bnd = 1 / math.sqrt(fan_in)
                v = torch.rand(p.shape, generator=g) * 2 * bnd - bnd
            p.copy_(v.half().float())


def betas_for(kind, T=1000):
    if kind == "linear":
        return torch.linspace(1e-4, 0.02, T, dtype=torch.float32)
    def ab(t):
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
    return torch.tensor([min(1 - ab((i + 1) / T) / ab(i / T), 0.999) for i in range(T)], dtype=torch.float32)


def prepare(g, x0, y, obj, num_classes):
    """nu_gen_loss_prepare: returns x_t, t_net, y_in, target."""
    Bn = x0.shape[0]
    if obj["kind"] == "flow":
        if obj.get("logit"):
            t = torch.sigmoid(torch.randn(Bn, generator=g) * obj["std"] + obj["mean"])
        else:
            t = torch.rand(Bn, generator=g)
        noise = torch.randn(x0.shape, generator=g)
        tt = t.view(Bn, 1, 1, 1)
        x_t = (1 - tt) * x0 + tt * noise
        target = noise - x0
        t_net = t * 1000.0
    else:
        ac = torch.cumprod(1.0 - betas_for(obj["betas"]), dim=0)
        ts = torch.randint(0, 1000, (Bn,), generator=g)
        noise = torch.randn(x0.shape, generator=g)
        sa = (ac[ts] ** 0.5).view(Bn, 1, 1, 1)
        sb = ((1 - ac[ts]) ** 0.5).view(Bn, 1, 1, 1)
        x_t = sa * x0 + sb * noise
        target = noise if obj["kind"] == "eps" else sa * noise - sb * x0
        t_net = ts.float()
    y_in = y.clone()
    if obj["dropout"] > 0:
        drop = torch.rand(Bn, generator=g) < obj["dropout"]
        y_in = torch.where(drop, torch.full_like(y, num_classes), y)
    return x_t, t_net, y_in, target


def loss_of(model, x_t, t, y, target):
    pred = model(x_t, t, y)[:, : target.shape[1]]
    return F.mse_loss(pred, target)


def main():
    out = {}
    nc = 3
    models = {
        "unet": (lambda: UNet(1, [4, 8], [False, True], 1, 4, 1e-5, 4, nc), 1, 8, 201),
        "dit": (lambda: DiT(2, 4, 8, 2, 2, 2, 8, 4, nc), 2, 8, 202),
    }
    built = {}
    for key, (mk, C, S, seed) in models.items():
        torch.manual_seed(0)
        m = mk()
        init_params(m, seed)
        built[key] = m
        for name, p in m.state_dict().items():
            out[f"{key}.init.{name}"] = p.detach().clone().half()
        gx = torch.Generator().manual_seed(seed + 1000)
        out[f"{key}.x0"] = (torch.rand((B, C, S, S), generator=gx) * 2 - 1)
        out[f"{key}.labels"] = torch.tensor([0, 1, 2, 1], dtype=torch.int64)
        print(key, "parameters:", sum(p.numel() for p in m.parameters()))

    cases = {
        "unet_eps": ("unet", dict(kind="eps", betas="linear", dropout=0.5), 301, True),
        "dit_flow": ("dit", dict(kind="flow", dropout=0.25), 302, True),
        "unet_v_cos": ("unet", dict(kind="v", betas="cosine", dropout=0.0), 303, False),
        "dit_flow_ln": ("dit", dict(kind="flow", logit=True, mean=0.5, std=0.8, dropout=0.0), 304, False),
    }
    for case, (key, obj, seed, full) in cases.items():
        m = built[key]
        x0, y = out[f"{key}.x0"], out[f"{key}.labels"]
        init = {n[len(key) + 6:]: v.float() for n, v in out.items() if n.startswith(f"{key}.init.")}
        m.load_state_dict(init)
        g = torch.Generator().manual_seed(seed)
        x_t, t, y_in, target = prepare(g, x0, y, obj, nc)
        out[f"{case}.x_t"], out[f"{case}.t"], out[f"{case}.y"], out[f"{case}.target"] = x_t, t, y_in, target
        loss = loss_of(m, x_t, t, y_in, target)
        m.zero_grad()
        loss.backward()
        out[f"{case}.loss"] = loss.detach().reshape(1)
        print(case, "loss", loss.item())
        if not full:
            continue
        for name, p in m.named_parameters():
            out[f"{case}.grad.{name}"] = p.grad.detach().clone()
        # 20-step AdamW trajectory from the same init and generator seed
        m.load_state_dict(init)
        opt = torch.optim.AdamW(m.parameters(), lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
        g = torch.Generator().manual_seed(seed)
        losses, norms = [], []
        for step in range(20):
            x_t, t, y_in, target = prepare(g, x0, y, obj, nc)
            loss = loss_of(m, x_t, t, y_in, target)
            opt.zero_grad()
            loss.backward()
            norms.append(torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0).item())
            opt.step()
            losses.append(loss.item())
        out[f"{case}.traj.loss"] = torch.tensor(losses, dtype=torch.float32)
        out[f"{case}.traj.gnorm"] = torch.tensor(norms, dtype=torch.float32)
        print(case, "trajectory", losses[0], "->", losses[-1], "grad norms", norms[0], "->", norms[-1])
    save(OUT, out, metadata={"script": "scripts/fixtures_gen_models.py"})
    print("wrote", OUT, os.path.getsize(OUT), "bytes")


if __name__ == "__main__":
    main()
