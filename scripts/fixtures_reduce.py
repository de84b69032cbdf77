#!/usr/bin/python3
"""fixtures_reduce.py — PyTorch reference values for the reduce op family (sum / mean / max
along dims with keepdim, sum_all / mean_all, softmax, cross_entropy, mse_loss): forward outputs
and input gradients for a random upstream gradient gy.
Writes tests/fixtures/reduce.safetensors (read by tests/test_op_reduce.c).
Run: /usr/bin/python3 scripts/fixtures_reduce.py   (Debian python3-torch 1.13, CPU, float32)
"""
import os

import torch
from st_write import save as st_save

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "reduce.safetensors")
DTYPES = {torch.float32: "F32", torch.int64: "I64", torch.int32: "I32"}


def save_safetensors(path, tensors):
    st_save(path, tensors)


def case(out, name, x, fn):
    """Stores name.x, name.y = fn(x), name.gy (random, shape of y) and name.grad_x."""
    x = x.clone().requires_grad_(True)
    y = fn(x)
    gy = torch.randn(y.shape)
    (y * gy).sum().backward()
    out[name + ".x"] = x
    out[name + ".y"] = y
    out[name + ".gy"] = gy
    out[name + ".grad_x"] = x.grad


def main():
    torch.manual_seed(1234)
    out = {}
    x3 = torch.randn(3, 5, 7)
    case(out, "sum_d1_keep", x3, lambda x: x.sum(dim=1, keepdim=True))
    case(out, "sum_d2", x3, lambda x: x.sum(dim=2))
    case(out, "sum_d0", x3, lambda x: x.sum(dim=0))
    case(out, "mean_dm1", x3, lambda x: x.mean(dim=-1))
    case(out, "mean_d1_keep", x3, lambda x: x.mean(dim=1, keepdim=True))
    case(out, "max_d1", x3, lambda x: x.max(dim=1).values)
    case(out, "max_d2_keep", x3, lambda x: x.max(dim=2, keepdim=True).values)
    # ties: small integers, so several maxima per line; gradient goes to the first one
    xt = torch.randint(0, 3, (4, 6, 5)).float()
    case(out, "max_ties_d1", xt, lambda x: x.max(dim=1).values)
    case(out, "max_ties_d2", xt, lambda x: x.max(dim=2).values)
    case(out, "sum_all", torch.randn(4, 3, 9), lambda x: x.sum().reshape(1))
    case(out, "mean_all", torch.randn(6, 11), lambda x: x.mean().reshape(1))
    case(out, "softmax", torch.randn(5, 37) * 3, lambda x: torch.softmax(x, dim=-1))
    case(out, "softmax3", torch.randn(2, 3, 9) * 2, lambda x: torch.softmax(x, dim=-1))

    # cross entropy: logits [N, C], targets int64 [N], mean reduction
    logits = (torch.randn(7, 13) * 2).requires_grad_(True)
    tgt = torch.randint(0, 13, (7,))
    loss = torch.nn.functional.cross_entropy(logits, tgt)
    gy = torch.tensor([0.75])
    (loss * gy[0]).backward()
    out["ce.x"] = logits
    out["ce.targets"] = tgt
    out["ce.y"] = loss.reshape(1)
    out["ce.gy"] = gy
    out["ce.grad_x"] = logits.grad

    # mse loss: mean((a - b)^2)
    a = torch.randn(4, 9).requires_grad_(True)
    b = torch.randn(4, 9).requires_grad_(True)
    loss = torch.nn.functional.mse_loss(a, b)
    gy = torch.tensor([1.3])
    (loss * gy[0]).backward()
    out["mse.a"] = a
    out["mse.b"] = b
    out["mse.y"] = loss.reshape(1)
    out["mse.gy"] = gy
    out["mse.grad_a"] = a.grad
    out["mse.grad_b"] = b.grad

    save_safetensors(OUT, out)
    print("wrote", OUT, os.path.getsize(OUT), "bytes")


if __name__ == "__main__":
    main()
