"""Minimal safetensors writer shared by the fixture scripts (the safetensors package is not in
Debian 12): u64-LE header length, JSON header padded with spaces to 8 bytes, raw little-endian
data in insertion (or sorted) order.

    from st_write import save
    save(path, {"x": tensor, ...}, metadata={"k": "v"}, cast=torch.float32, sort_keys=False)
"""
import json
import os
import struct

import torch

DTYPES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
          torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
          torch.bool: "BOOL"}


def save(path, tensors, metadata=None, cast=None, sort_keys=False):
    """Writes tensors (a dict name -> torch.Tensor) to path atomically. `cast`: convert every
    tensor to this dtype first (e.g. float64 references stored as float32)."""
    header = {"__metadata__": metadata} if metadata else {}
    blobs, off = [], 0
    for name in (sorted(tensors) if sort_keys else tensors):
        t = tensors[name].detach().contiguous().cpu()
        if cast is not None:
            t = t.to(cast)
        data = t.view(torch.int16).numpy().tobytes() if t.dtype == torch.bfloat16 else t.numpy().tobytes()
        header[name] = {"dtype": DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)
