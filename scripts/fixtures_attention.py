#!/usr/bin/python3
"""fixtures_attention.py — PyTorch reference values for the attention op family.

Writes tests/fixtures/attention.safetensors (read by tests/test_op_attention.c). For each case
"caseN": inputs q, k, v (and mask when used), the upstream gradient go, the output out and the
gradients grad_q, grad_k, grad_v of loss = sum(out * go).

The reference is torch.nn.functional.scaled_dot_product_attention's definition (torch 2.x docs,
no dropout): softmax(q k^T * scale + attn_bias) v where attn_bias = additive mask, plus -inf above
the diagonal when is_causal (top-left aligned: query i sees keys j <= i). Debian's torch 1.13 has
no public SDPA, so it is written out here, evaluated in float64 from the float32 inputs and
stored as float32; each case without fully masked rows is cross-checked (to 1e-10) against 1.13's
private torch.nn.functional._scaled_dot_product_attention. One case has a fully masked row: torch gives NaN there; nuance defines the
row's output as 0 with zero gradients, and so does this reference (max taken as 0 on such rows,
denominator 1).

Run: /usr/bin/python3 scripts/fixtures_attention.py   (torch.manual_seed fixed, CPU)
"""
import math
import os

import torch
from st_write import save as st_save


def sdpa_ref(q, k, v, mask, causal, scale):
    s = (q @ k.transpose(-1, -2)) * scale
    if mask is not None:
        s = s + mask
    if causal:
        tq, tk = s.shape[-2], s.shape[-1]
        keep = torch.ones(tq, tk, dtype=torch.bool).tril(diagonal=0)
        s = s.masked_fill(~keep, float("-inf"))
    m = s.amax(dim=-1, keepdim=True).detach()
    m = torch.where(torch.isinf(m), torch.zeros_like(m), m)  # fully masked rows: p = 0
    p = torch.exp(s - m)
    l = p.sum(dim=-1, keepdim=True)
    l = torch.where(l == 0, torch.ones_like(l), l)
    return (p / l) @ v


def write_safetensors(path, tensors):
    st_save(path, tensors, cast=torch.float32)


# (B, NH, Tq, Tk, HD, HDv, mask shape or None, causal, scale (<= 0: default))
CASES = [
    (2, 3, 9, 13, 8, 8, None, False, 0.0),
    (1, 2, 17, 17, 20, 20, None, True, 0.0),
    (2, 2, 11, 6, 5, 7, (2, 1, 11, 6), False, 0.3),  # broadcast over heads, -inf entries, one full row
    (1, 2, 7, 12, 4, 4, None, True, 0.0),  # causal, Tq < Tk (top-left)
    (1, 1, 12, 5, 3, 6, None, True, 0.0),  # causal, Tq > Tk
    (2, 2, 10, 10, 6, 5, (10, 10), True, 0.0),  # 2-D mask and causal together
    (1, 1, 70, 77, 40, 40, (1, 70, 77), False, 0.0),  # more than one tile in the fast backward
]


def main():
    torch.manual_seed(1234)
    out = {}
    for n, (B, NH, Tq, Tk, HD, HDv, mshape, causal, scale) in enumerate(CASES):
        q = torch.randn(B, NH, Tq, HD)
        k = torch.randn(B, NH, Tk, HD)
        v = torch.randn(B, NH, Tk, HDv)
        go = torch.randn(B, NH, Tq, HDv)
        mask = None
        if mshape is not None:
            mask = torch.randn(*mshape)
            drop = torch.rand(*mshape) < 0.2
            mask = mask.masked_fill(drop, float("-inf"))
            if n == 2:
                mask[1, 0, 4, :] = float("-inf")  # a fully masked row
        eff = scale if scale > 0 else 1.0 / math.sqrt(HD)
        qd, kd, vd = (t.double().requires_grad_(True) for t in (q, k, v))
        y = sdpa_ref(qd, kd, vd, None if mask is None else mask.double(), causal, eff)
        (y * go.double()).sum().backward()
        sdpa = getattr(torch.nn.functional, "_scaled_dot_product_attention", None)  # torch 1.13
        if sdpa is not None and n != 2:
            # cross-check the written-out definition against torch's own (no fully masked rows;
            # 1.13's private op takes mask and is_causal; its causal mask is the top-left tril)
            eff_mask = None if mask is None else mask.double()
            if causal:
                keep = torch.ones(Tq, Tk, dtype=torch.bool).tril(diagonal=0)
                cm = torch.zeros(Tq, Tk, dtype=torch.float64).masked_fill(~keep, float("-inf"))
                eff_mask = cm if eff_mask is None else eff_mask + cm
            t_out = sdpa(q.double() * (eff * math.sqrt(HD)), k.double(), v.double(), eff_mask, 0.0, False, False)[0]
            assert (t_out - y.detach()).abs().max().item() < 1e-10, f"case{n}: definition differs from torch"
        p = f"case{n}."
        out[p + "q"], out[p + "k"], out[p + "v"], out[p + "go"] = q, k, v, go
        if mask is not None:
            out[p + "mask"] = mask
        out[p + "out"] = y.detach()
        out[p + "grad_q"], out[p + "grad_k"], out[p + "grad_v"] = qd.grad, kd.grad, vd.grad
        out[p + "cfg"] = torch.tensor([B, NH, Tq, Tk, HD, HDv, 1 if causal else 0, scale], dtype=torch.float32)
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    path = os.path.join(root, "tests", "fixtures", "attention.safetensors")
    write_safetensors(path, out)
    print(path, os.path.getsize(path), "bytes")


if __name__ == "__main__":
    main()
