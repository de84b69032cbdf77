#!/usr/bin/python3
"""fixtures_norm.py — PyTorch reference values for the norm op family: group_norm and
layer_norm (torch.nn.functional, with and without affine), RMSNorm (x * rsqrt(mean(x^2) + eps)
* w): forward outputs and gradients of x, w, b for a random upstream gradient gy.
Writes tests/fixtures/norm.safetensors (read by tests/test_op_norm.c).
Run: /usr/bin/python3 scripts/fixtures_norm.py   (Debian python3-torch 1.13, CPU, float32)
"""
import os

import torch
import torch.nn.functional as F
from st_write import save as st_save

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "norm.safetensors")


def save_safetensors(path, tensors):
    st_save(path, tensors, cast=torch.float32)


def case(out, name, fn, x, w=None, b=None):
    """name.x/.w/.b inputs, name.y = fn(x, w, b), name.gy random, name.grad_{x,w,b}."""
    leaves = {"x": x, "w": w, "b": b}
    for k, v in list(leaves.items()):
        if v is not None:
            leaves[k] = v.clone().requires_grad_(True)
    y = fn(leaves["x"], leaves["w"], leaves["b"])
    gy = torch.randn(y.shape)
    (y * gy).sum().backward()
    out[name + ".y"] = y
    out[name + ".gy"] = gy
    for k, v in leaves.items():
        if v is not None:
            out[name + "." + k] = v
            out[name + ".grad_" + k] = v.grad


def rms_norm(x, w, eps):
    y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return y * w if w is not None else y


def main():
    torch.manual_seed(4321)
    out = {}
    # group norm: offset mean and non-unit std to exercise the statistics
    case(out, "gn_affine", lambda x, w, b: F.group_norm(x, 3, w, b, 1e-5),
         torch.randn(2, 6, 5, 3) * 2 + 0.5, torch.randn(6), torch.randn(6))
    case(out, "gn_plain", lambda x, w, b: F.group_norm(x, 2, None, None, 1e-6), torch.randn(1, 4, 7) * 0.5 - 1)
    case(out, "gn_g1", lambda x, w, b: F.group_norm(x, 1, w, b, 1e-5),
         torch.randn(3, 5, 4, 2), torch.randn(5), torch.randn(5))
    # layer norm over the last dim
    case(out, "ln_affine", lambda x, w, b: F.layer_norm(x, (10,), w, b, 1e-5),
         torch.randn(3, 4, 10) * 1.5 + 0.3, torch.randn(10), torch.randn(10))
    case(out, "ln_plain", lambda x, w, b: F.layer_norm(x, (19,), None, None, 1e-5), torch.randn(5, 19))
    # RMSNorm
    case(out, "rms_w", lambda x, w, b: rms_norm(x, w, 1e-6), torch.randn(5, 12) + 0.2, torch.randn(12))
    case(out, "rms_plain", lambda x, w, b: rms_norm(x, None, 1e-5), torch.randn(2, 3, 21))
    save_safetensors(OUT, out)
    print("wrote", OUT, os.path.getsize(OUT), "bytes")


if __name__ == "__main__":
    main()
