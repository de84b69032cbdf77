#!/usr/bin/python3
"""PyTorch fixtures for the matmul family (tests/test_op_matmul.c).

Run with Debian's python3-torch: /usr/bin/python3 scripts/fixtures_matmul.py
Writes tests/fixtures/matmul.safetensors (float32). For each case <c>: the inputs (<c>.a, <c>.b,
<c>.bias), the output <c>.y, a fixed random <c>.r and the gradients of sum(y * r) with respect to
every input (<c>.grad_a, <c>.grad_b, <c>.grad_bias). The transpose flags of each matmul case are
part of its name (nn, tn, nt, tt) and are repeated in the test's case table.
"""
import os

import torch
import torch.nn.functional as F
from st_write import save as st_save

torch.manual_seed(20240611)
tensors = {}


def write_safetensors(path, named):
    st_save(path, named, cast=torch.float32)


def record(name, fn, inputs):
    """inputs: dict role -> tensor; fn(**inputs) -> y. Stores inputs, y, r and the gradients."""
    leaves = {k: v.clone().requires_grad_(True) for k, v in inputs.items()}
    y = fn(**leaves)
    r = torch.randn_like(y)
    (y * r).sum().backward()
    for k, v in leaves.items():
        tensors[f"{name}.{k}"] = v
        tensors[f"{name}.grad_{k}"] = v.grad
    tensors[f"{name}.y"] = y
    tensors[f"{name}.r"] = r


def mm(ta, tb):
    def f(a, b):
        return torch.matmul(a.transpose(-1, -2) if ta else a, b.transpose(-1, -2) if tb else b)
    return f


# a: [..., M, K] (or [..., K, M] with ta), b: [..., K, N] (or [..., N, K] with tb)
record("mm_nn", mm(False, False), {"a": torch.randn(5, 7), "b": torch.randn(7, 4)})
record("mm_bcast_nn", mm(False, False), {"a": torch.randn(2, 1, 5, 6), "b": torch.randn(3, 6, 4)})
record("mm_tn", mm(True, False), {"a": torch.randn(2, 6, 5), "b": torch.randn(2, 6, 4)})
record("mm_nt", mm(False, True), {"a": torch.randn(3, 5, 6), "b": torch.randn(4, 6)})
record("mm_tt", mm(True, True), {"a": torch.randn(6, 5), "b": torch.randn(2, 4, 6)})
record("mm_big_nt", mm(False, True), {"a": torch.randn(2, 33, 40), "b": torch.randn(17, 40)})

# torch.nn.functional.linear: x [..., in], w [out, in], bias [out]
record("lin_3d", lambda a, b, bias: F.linear(a, b, bias), {"a": torch.randn(2, 3, 8), "b": torch.randn(6, 8), "bias": torch.randn(6)})
record("lin_1d", lambda a, b, bias: F.linear(a, b, bias), {"a": torch.randn(8), "b": torch.randn(5, 8), "bias": torch.randn(5)})
record("lin_nobias", lambda a, b: F.linear(a, b), {"a": torch.randn(4, 16), "b": torch.randn(12, 16)})

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "matmul.safetensors")
write_safetensors(out, tensors)
print(out, os.path.getsize(out), "bytes")
