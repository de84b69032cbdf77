#!/usr/bin/python3
"""PyTorch fixtures for tests/test_lora.c: a tiny base model with SD-style canonical names, one
LoRA written in every dialect the loader reads, a second LoRA, broken files, and the outputs of
each layer with the merged weight W + scale * up @ down (computed in float64).

Base layers (tests/fixtures/lora_base.safetensors, F32):
  unet  down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q      Linear 32 -> 64
        down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0  Linear 64 -> 32 + bias
        down_blocks.0.resnets.0.conv1                                   Conv 8 -> 16, 3x3, s1 p1
        down_blocks.0.downsamplers.0.conv                               Conv 32 -> 16, 3x3, s2 p1
                                                                        (rows of 288: whole q8_0
                                                                        blocks, so --type q8_0
                                                                        puts it in matrix form)
        down_blocks.0.attentions.0.proj_in                              Conv 16 -> 16, 1x1
  clip  text_model.encoder.layers.0.self_attn.q_proj                    Linear 32 -> 32 + bias
LoRA 1: linears rank 4, alpha 2; convs rank 2, alpha 1.5 (LoCon: down [r, in, k, k] with the base
stride/padding, up [out, r, 1, 1]). Values are rounded to bf16 and kept away from f16 subnormals,
so they are exact in f32, f16 and bf16 alike. Files:
  lora_kohya.safetensors      kohya names from diffusers paths (F16, 0-d alphas), plus a layer
                              the model lacks, a LoHa tensor and a stray tensor (warnings)
  lora_kohya_ldm.safetensors  kohya names from LDM paths (input_blocks_1_1_...), BF16
  lora_peft.safetensors       "unet." + lora_A/lora_B, an attention-processor to_out_lora, and
                              "text_encoder." + lora_linear_layer (F32, no alpha: B pre-scaled)
  lora_peft_base.safetensors  "base_model.model." + lora_A.default / lora.down (UNet only, F32)
LoRA 2 (lora_second.safetensors, kohya F16, rank 2, no alpha => scale = weight) on to_q, conv1.
Broken: lora_bad_shape.safetensors (to_q lora_down [4, 16] on a 32-input layer),
lora_missing_up.safetensors (a lora_down without its lora_up).
Outputs (lora_io.safetensors): x.<layer>, and <layer>.base, <layer>.l1 (LoRA 1 at unet weight
0.8, text encoder weight 0.6), <layer>.l12 (plus LoRA 2 at unet weight -0.5).
"""
import os

import torch
import torch.nn.functional as F
from st_write import save

torch.manual_seed(11)
D = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures")

P = "down_blocks.0.attentions.0.transformer_blocks.0.attn1."
# name: (kind, in, out, k, stride, pad, bias, part)
LAYERS = {
    P + "to_q": ("lin", 32, 64, 1, 1, 0, False, "unet"),
    P + "to_out.0": ("lin", 64, 32, 1, 1, 0, True, "unet"),
    "down_blocks.0.resnets.0.conv1": ("conv", 8, 16, 3, 1, 1, True, "unet"),
    "down_blocks.0.downsamplers.0.conv": ("conv", 32, 16, 3, 2, 1, True, "unet"),
    "down_blocks.0.attentions.0.proj_in": ("conv", 16, 16, 1, 1, 0, True, "unet"),
    "text_model.encoder.layers.0.self_attn.q_proj": ("lin", 32, 32, 1, 1, 0, True, "te"),
}
# kohya LDM paths of the UNet layers (layers_per_block 1: input_blocks.1 = resnet 0 +
# attention 0 of level 0, input_blocks.2.0.op its downsampler)
LDM = {
    P + "to_q": "input_blocks_1_1_transformer_blocks_0_attn1_to_q",
    P + "to_out.0": "input_blocks_1_1_transformer_blocks_0_attn1_to_out_0",
    "down_blocks.0.resnets.0.conv1": "input_blocks_1_0_in_layers_2",
    "down_blocks.0.downsamplers.0.conv": "input_blocks_2_0_op",
    "down_blocks.0.attentions.0.proj_in": "input_blocks_1_1_proj_in",
}
W1_UNET, W1_TE, W2_UNET = 0.8, 0.6, -0.5


def exact(t):
    """bf16-rounded, |v| >= 1e-3: exact in f32, f16 and bf16."""
    t = t.to(torch.bfloat16).float()
    return torch.where(t.abs() < 1e-3, torch.full_like(t, 1e-3) * torch.sign(t + 1e-9), t).to(torch.bfloat16).float()


def wshape(kind, cin, cout, k):
    return (cout, cin) if kind == "lin" else (cout, cin, k, k)


base = {}
for name, (kind, cin, cout, k, s, p, bias, part) in LAYERS.items():
    fan = cin * k * k
    base[name + ".weight"] = torch.randn(*wshape(kind, cin, cout, k)) / fan ** 0.5
    if bias:
        base[name + ".bias"] = torch.randn(cout) / 10


def make_lora(rank_lin, rank_conv, names):
    lo = {}
    for name in names:
        kind, cin, cout, k = LAYERS[name][:4]
        r = rank_lin if kind == "lin" else rank_conv
        down = exact(torch.randn(*((r, cin) if kind == "lin" else (r, cin, k, k))) / (cin * k * k) ** 0.5)
        up = exact(torch.randn(*((cout, r) if kind == "lin" else (cout, r, 1, 1))) / r ** 0.5)
        lo[name] = (down, up)
    return lo


lora1 = make_lora(4, 2, list(LAYERS))
alpha1 = {n: (2.0 if LAYERS[n][0] == "lin" else 1.5) for n in LAYERS}
lora2 = make_lora(2, 2, [P + "to_q", "down_blocks.0.resnets.0.conv1"])


def kohya_name(name):
    part = LAYERS[name][7]
    return ("lora_unet_" if part == "unet" else "lora_te_") + name.replace(".", "_")


# ---- lora_kohya: F16, 0-d alphas (f16 for linears, f32 for convs, as files vary)
t = {}
for n, (d, u) in lora1.items():
    k = kohya_name(n)
    t[k + ".lora_down.weight"] = d.half()
    t[k + ".lora_up.weight"] = u.half()
    t[k + ".alpha"] = torch.tensor(alpha1[n], dtype=torch.float16 if LAYERS[n][0] == "lin" else torch.float32)
t["lora_unet_down_blocks_3_attentions_0_proj_out.lora_down.weight"] = torch.zeros(2, 16).half()  # not in the model
t["lora_unet_down_blocks_3_attentions_0_proj_out.lora_up.weight"] = torch.zeros(16, 2).half()
t["lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_k.hada_w1_a"] = torch.zeros(4, 4).half()
t["ss_stray_tensor"] = torch.zeros(1)
save(os.path.join(D, "lora_kohya.safetensors"), t, metadata={"ss_network_module": "networks.lora"})

# ---- lora_kohya_ldm: BF16, LDM paths for the UNet
t = {}
for n, (d, u) in lora1.items():
    k = "lora_unet_" + LDM[n] if n in LDM else kohya_name(n)
    t[k + ".lora_down.weight"] = d.bfloat16()
    t[k + ".lora_up.weight"] = u.bfloat16()
    t[k + ".alpha"] = torch.tensor(alpha1[n])
save(os.path.join(D, "lora_kohya_ldm.safetensors"), t)

# ---- lora_peft: F32, no alpha (scale = weight), so B carries alpha / rank
t = {}
for n, (d, u) in lora1.items():
    r = d.shape[0]
    b = u * (alpha1[n] / r)
    if n == P + "to_out.0":
        t["unet." + P + "processor.to_out_lora.down.weight"] = d
        t["unet." + P + "processor.to_out_lora.up.weight"] = b
    elif LAYERS[n][7] == "te":
        t["text_encoder." + n + ".lora_linear_layer.down.weight"] = d
        t["text_encoder." + n + ".lora_linear_layer.up.weight"] = b
    else:
        t["unet." + n + ".lora_A.weight"] = d
        t["unet." + n + ".lora_B.weight"] = b
save(os.path.join(D, "lora_peft.safetensors"), t)

# ---- lora_peft_base: a UNet-only PEFT save
t = {}
for n, (d, u) in lora1.items():
    if LAYERS[n][7] != "unet":
        continue
    b = u * (alpha1[n] / d.shape[0])
    if n == "down_blocks.0.resnets.0.conv1":
        t["base_model.model." + n + ".lora.down.weight"] = d
        t["base_model.model." + n + ".lora.up.weight"] = b
    else:
        t["base_model.model." + n + ".lora_A.default.weight"] = d
        t["base_model.model." + n + ".lora_B.default.weight"] = b
save(os.path.join(D, "lora_peft_base.safetensors"), t)

# ---- lora_second: kohya, no alpha
t = {}
for n, (d, u) in lora2.items():
    t[kohya_name(n) + ".lora_down.weight"] = d.half()
    t[kohya_name(n) + ".lora_up.weight"] = u.half()
save(os.path.join(D, "lora_second.safetensors"), t)

# ---- broken files
k = kohya_name(P + "to_q")
save(os.path.join(D, "lora_bad_shape.safetensors"),
     {k + ".lora_down.weight": torch.zeros(4, 16).half(), k + ".lora_up.weight": torch.zeros(64, 4).half()})
save(os.path.join(D, "lora_missing_up.safetensors"), {k + ".lora_down.weight": torch.zeros(4, 32).half()})

# ---- outputs with merged weights, float64
inputs = {
    P + "to_q": torch.randn(2, 5, 32),
    P + "to_out.0": torch.randn(2, 5, 64),
    "down_blocks.0.resnets.0.conv1": torch.randn(2, 8, 9, 9),
    "down_blocks.0.downsamplers.0.conv": torch.randn(2, 32, 9, 9),
    "down_blocks.0.attentions.0.proj_in": torch.randn(2, 16, 9, 9),
    "text_model.encoder.layers.0.self_attn.q_proj": torch.randn(2, 5, 32),
}


def delta(name, d, u, scale):
    """scale * up @ down in the base weight's shape."""
    cout = u.shape[0]
    m = u.double().reshape(cout, -1) @ d.double().reshape(d.shape[0], -1)
    return scale * m.reshape(base[name + ".weight"].shape)


def run(name, w):
    kind, cin, cout, k, s, p, bias, part = LAYERS[name]
    x = inputs[name].double()
    b = base[name + ".bias"].double() if bias else None
    return F.linear(x, w, b) if kind == "lin" else F.conv2d(x, w, b, stride=s, padding=p)


io = {}
for n in LAYERS:
    part = LAYERS[n][7]
    w0 = base[n + ".weight"].double()
    d, u = lora1[n]
    w1 = w0 + delta(n, d, u, (W1_UNET if part == "unet" else W1_TE) * alpha1[n] / d.shape[0])
    w12 = w1
    if n in lora2:
        d2, u2 = lora2[n]
        w12 = w1 + delta(n, d2, u2, W2_UNET)  # no alpha: scale = weight
    io["x." + n] = inputs[n]
    io[n + ".base"] = run(n, w0).float()
    io[n + ".l1"] = run(n, w1).float()
    io[n + ".l12"] = run(n, w12).float()

save(os.path.join(D, "lora_base.safetensors"), base)
save(os.path.join(D, "lora_io.safetensors"), io)
print("wrote lora fixtures")
