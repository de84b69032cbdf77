#!/usr/bin/python3
"""fixtures_conv.py — PyTorch reference fixtures for the conv op family.

Writes tests/fixtures/conv.safetensors (read by tests/test_op_conv.c): for each case, the
inputs x, w, b (optional), an upstream gradient gy, and torch's outputs y = conv(x, w, b) and the
gradients dx, dw, db of sum(y * gy). The case list and each case's parameters are stored in the
file's metadata: "cases" = "c0 c1 ...", "<case>" = "<conv2d|conv_transpose2d> sh sw ph pw dh dw
groups oph opw". Run with Debian's torch (float32, CPU):  /usr/bin/python3 scripts/fixtures_conv.py
"""
import os

import torch
from st_write import save as st_save

torch.manual_seed(1234)

# (kind, N, C_in, H, W, C_out, KH, KW, stride, padding, dilation, groups, output_padding, bias)
CASES = [
    ("conv2d", 2, 4, 9, 7, 6, 3, 3, (1, 1), (1, 1), (1, 1), 1, (0, 0), True),
    ("conv2d", 1, 3, 10, 11, 5, 3, 3, (2, 2), (1, 1), (1, 1), 1, (0, 0), True),
    ("conv2d", 2, 4, 9, 10, 4, 3, 3, (1, 2), (2, 1), (2, 1), 2, (0, 0), False),
    ("conv2d", 1, 6, 8, 9, 6, 3, 3, (1, 1), (1, 1), (1, 1), 6, (0, 0), True),      # depthwise
    ("conv2d", 2, 8, 5, 6, 12, 1, 1, (1, 1), (0, 0), (1, 1), 1, (0, 0), True),     # 1x1
    ("conv2d", 1, 4, 12, 12, 8, 4, 4, (2, 2), (1, 1), (1, 1), 1, (0, 0), True),    # 4x4 down
    ("conv2d", 1, 32, 10, 11, 32, 3, 3, (1, 1), (1, 1), (1, 1), 1, (0, 0), True),  # Winograd-sized
    ("conv_transpose2d", 2, 4, 5, 6, 3, 3, 3, (2, 2), (1, 1), (1, 1), 1, (1, 1), True),
    ("conv_transpose2d", 1, 6, 5, 4, 4, 4, 4, (2, 2), (1, 1), (1, 1), 2, (0, 0), True),
    ("conv_transpose2d", 1, 4, 6, 5, 6, 3, 3, (1, 1), (1, 0), (2, 2), 1, (1, 1), True),  # op >= stride
    ("conv_transpose2d", 2, 5, 4, 4, 3, 5, 3, (3, 2), (2, 1), (1, 1), 1, (2, 1), False),
    ("conv_transpose2d", 1, 16, 9, 10, 24, 3, 3, (1, 1), (1, 1), (1, 1), 1, (0, 0), True),
]


def save_safetensors(path, tensors, metadata):
    st_save(path, tensors, metadata=metadata, cast=torch.float32)


def main():
    tensors, meta, names = {}, {}, []
    for i, (kind, N, C, H, W, K, KH, KW, s, p, d, g, op, has_b) in enumerate(CASES):
        name = "c%d" % i
        names.append(name)
        x = torch.randn(N, C, H, W, requires_grad=True)
        if kind == "conv2d":
            w = torch.randn(K, C // g, KH, KW) / (C // g * KH * KW) ** 0.5
        else:
            w = torch.randn(C, K // g, KH, KW) / (C // g * KH * KW) ** 0.5
        w.requires_grad_(True)
        b = torch.randn(K, requires_grad=True) if has_b else None
        if kind == "conv2d":
            y = torch.nn.functional.conv2d(x, w, b, stride=s, padding=p, dilation=d, groups=g)
        else:
            y = torch.nn.functional.conv_transpose2d(x, w, b, stride=s, padding=p, output_padding=op, groups=g,
                                                     dilation=d)
        gy = torch.randn_like(y)
        (y * gy).sum().backward()
        tensors[name + ".x"] = x
        tensors[name + ".w"] = w
        if has_b:
            tensors[name + ".b"] = b
            tensors[name + ".db"] = b.grad
        tensors[name + ".gy"] = gy
        tensors[name + ".y"] = y
        tensors[name + ".dx"] = x.grad
        tensors[name + ".dw"] = w.grad
        meta[name] = "%s %d %d %d %d %d %d %d %d %d" % (kind, s[0], s[1], p[0], p[1], d[0], d[1], g, op[0], op[1])
    meta["cases"] = " ".join(names)
    here = os.path.dirname(os.path.abspath(__file__))
    out = os.path.join(here, "..", "tests", "fixtures", "conv.safetensors")
    save_safetensors(out, tensors, meta)
    print("wrote %s (%d bytes)" % (out, os.path.getsize(out)))


if __name__ == "__main__":
    main()
