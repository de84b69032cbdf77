#!/usr/bin/python3
"""PyTorch fixtures for the spatial and misc op families (tests/test_op_spatial.c, test_op_misc.c).

Run with Debian's python3-torch: /usr/bin/python3 scripts/fixtures_spatial_misc.py
Writes tests/fixtures/spatial_misc.safetensors: for each case, inputs, the output and the
gradient of sum(y * r) for a fixed r (also stored), all float32.
"""
import os
import torch
import torch.nn.functional as F
from st_write import save as st_save

torch.manual_seed(0)
out = {}

def save(path, tensors):
    st_save(path, tensors)


def case(name, fn, *xs):
    xs = [x.clone().requires_grad_(True) for x in xs]
    y = fn(*xs)
    r = torch.randn_like(y)
    (y * r).sum().backward()
    for i, x in enumerate(xs):
        out[f"{name}.x{i}"] = x
        out[f"{name}.grad{i}"] = x.grad
    out[f"{name}.y"] = y
    out[f"{name}.r"] = r

x = torch.randn(2, 3, 5, 7)
case("upsample2", lambda a: F.interpolate(a, scale_factor=2, mode="nearest"), x)
case("upsample3", lambda a: F.interpolate(a, scale_factor=3, mode="nearest"), torch.randn(1, 2, 3, 4))
case("avgpool_k2s2", lambda a: F.avg_pool2d(a, 2, 2), torch.randn(2, 3, 6, 8))
case("avgpool_k3s2p1", lambda a: F.avg_pool2d(a, 3, 2, 1), x)
case("avgpool_k3s1p1_nopad", lambda a: F.avg_pool2d(a, 3, 1, 1, count_include_pad=False), x)
case("maxpool_k2s2", lambda a: F.max_pool2d(a, 2, 2), torch.randn(2, 3, 6, 8))
case("maxpool_k3s1p1", lambda a: F.max_pool2d(a, 3, 1, 1), x)
case("concat_dim1", lambda a, b: torch.cat([a, b], 1), torch.randn(2, 3, 4, 5), torch.randn(2, 2, 4, 5))
case("concat_dim3", lambda a, b: torch.cat([a, b], 3), torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 2))
case("pad", lambda a: F.pad(a, (1, 2, 0, 3)), torch.randn(2, 3, 4, 5))  # W: 1,2  H: 0,3

# misc: timestep embedding exactly as diffusers.models.embeddings.get_timestep_embedding (0.27)
def tsemb(t, dim, flip, shift, max_period=10000):
    import math
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(0, half, dtype=torch.float32)
    exponent = exponent / (half - shift)
    emb = torch.exp(exponent)
    emb = t[:, None].float() * emb[None, :]
    emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=-1)
    if flip:
        emb = torch.cat([emb[:, half:], emb[:, :half]], dim=-1)
    if dim % 2 == 1:
        emb = F.pad(emb, (0, 1, 0, 0))
    return emb

t = torch.tensor([0.0, 1.0, 17.0, 999.0, 500.5])
out["temb_sd.t"] = t
out["temb_sd.y"] = tsemb(t, 320, True, 0.0)       # SD UNet: flip_sin_to_cos=True, shift 0
out["temb_dit.y"] = tsemb(t, 256, True, 0.0)
out["temb_shift1.y"] = tsemb(t, 33, False, 1.0)    # odd dim, shift 1

table = torch.randn(11, 6)
ids = torch.tensor([[3, 0, 10], [3, 3, 7]])
case("embedding", lambda w: F.embedding(ids, w), table)
out["embedding.ids"] = ids

path = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "spatial_misc.safetensors")
save(path, out)
print("wrote", path, len(out), "tensors")
