#!/usr/bin/python3
"""PyTorch fixture for tests/test_nn.c: a cross-attention block in diffusers naming.

Writes tests/fixtures/nn_weights.safetensors (weights, with a 'blk.' prefix, F16-exact values
stored as F16) and tests/fixtures/nn_io.safetensors (x, context, out: F32). The block is
out = to_out.0(softmax(q k^T / sqrt(hd)) v) with q = to_q(x), k = to_k(ctx), v = to_v(ctx),
8 heads, no q/k/v bias, bias on to_out.0 — diffusers' Attention with cross_attention_dim.
"""
import os
import torch
from st_write import save as st_save

torch.manual_seed(3)

def save(path, tensors):
    st_save(path, tensors)


D, Dc, H, T, S, B = 64, 48, 8, 10, 7, 2
w = {
    "to_q.weight": torch.randn(D, D) / 8, "to_k.weight": torch.randn(D, Dc) / 7,
    "to_v.weight": torch.randn(D, Dc) / 7, "to_out.0.weight": torch.randn(D, D) / 8,
    "to_out.0.bias": torch.randn(D) / 10,
}
w = {k: v.half().float() for k, v in w.items()}
x, c = torch.randn(B, T, D), torch.randn(B, S, Dc)
q, k, v = x @ w["to_q.weight"].T, c @ w["to_k.weight"].T, c @ w["to_v.weight"].T
sh = lambda t: t.reshape(B, -1, H, D // H).permute(0, 2, 1, 3)
a = torch.softmax(sh(q) @ sh(k).transpose(-1, -2) / (D // H) ** 0.5, -1) @ sh(v)
a = a.permute(0, 2, 1, 3).reshape(B, T, D)
out = a @ w["to_out.0.weight"].T + w["to_out.0.bias"]
d = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures")
save(os.path.join(d, "nn_weights.safetensors"), {"blk." + k: v.half() for k, v in w.items()})
save(os.path.join(d, "nn_io.safetensors"), {"x": x, "context": c, "out": out})
print("wrote nn fixtures")
