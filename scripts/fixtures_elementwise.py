#!/usr/bin/python3
"""fixtures_elementwise.py — PyTorch reference values for the elementwise op family.

Writes tests/fixtures/elementwise.safetensors (read by tests/test_op_elementwise.c). For each case
<c>: inputs <c>.a (and <c>.b), an upstream gradient <c>.gy, the forward output <c>.y and the input
gradients <c>.ga / <c>.gb of y.backward(gy). float32 CPU, torch.manual_seed(0).
Run: /usr/bin/python3 scripts/fixtures_elementwise.py   (Debian python3-torch 1.13)
"""
import os

import torch
from st_write import save as st_save

torch.manual_seed(0)
T = {}


def put(name, t):
    T[name] = t.detach().contiguous().float()


def case(name, fn, a, b=None):
    a = a.clone().requires_grad_(True)
    args = [a]
    if b is not None:
        b = b.clone().requires_grad_(True)
        args.append(b)
    y = fn(*args)
    gy = torch.randn(y.shape)
    y.backward(gy)
    put(name + ".a", a)
    put(name + ".y", y)
    put(name + ".gy", gy)
    put(name + ".ga", a.grad)
    if b is not None:
        put(name + ".b", b)
        put(name + ".gb", b.grad)


def away_from_zero(shape):
    s = torch.rand(shape) * 1.5 + 0.5
    return torch.where(torch.rand(shape) < 0.5, -s, s)


# binary ops with broadcasting
case("add", torch.add, torch.randn(2, 3, 4, 5), torch.randn(3, 1, 1))
case("sub", torch.sub, torch.randn(4, 1, 6), torch.randn(5, 1))
case("mul", torch.mul, torch.randn(7, 33), torch.randn(33))
case("div", torch.div, torch.randn(3, 17), away_from_zero((3, 1)))
case("mul_bcast_both", torch.mul, torch.randn(2, 1, 9), torch.randn(5, 1))

# affine, expand, sum_to
case("affine", lambda x: x * 1.5 - 0.25, torch.randn(5, 11))
case("expand", lambda x: x.expand(2, 3, 4, 5), torch.randn(3, 1, 5))
case("sum_to", lambda x: x.sum(dim=(0, 2), keepdim=True).reshape(3, 1, 5), torch.randn(2, 3, 4, 5))

# unary activations (x over a range that covers the tails)
F = torch.nn.functional
unary = {
    "silu": F.silu,
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "relu": torch.relu,
    "sqr": lambda x: x * x,
    "exp": torch.exp,
}
for name, fn in unary.items():
    case(name, fn, torch.randn(3, 37) * 3.0)
case("sqrt", torch.sqrt, torch.rand(3, 37) * 4.0 + 0.1)
case("ln", torch.log, torch.rand(3, 37) * 4.0 + 0.1)

# casts: f32 -> f16 / bf16 rounding (values spread over many binades, incl. f16 denormals)
x = torch.randn(257) * torch.exp(torch.randn(257) * 4.0)
put("cast.x", x)
put("cast.f16", x.half().float())
put("cast.bf16", x.bfloat16().float())


def save(path, tensors):
    st_save(path, tensors, cast=torch.float32, sort_keys=True)


out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "elementwise.safetensors")
os.makedirs(os.path.dirname(out), exist_ok=True)
save(out, T)
print("wrote", os.path.normpath(out), os.path.getsize(out), "bytes,", len(T), "tensors")
