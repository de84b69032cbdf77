#!/usr/bin/python3
"""Run the `nuance bench` shapes in PyTorch and print nuance/PyTorch ratios side by side.

    OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2 /usr/bin/python3 bench/vs_torch.py [--threads 2] [--nuance build/nuance] [CASE...]

Uses Debian's python3-torch (CPU). PyTorch's OpenMP threads slow down badly when another process
shares the cores, so run on an idle machine; nuance and PyTorch are measured one after the other
in the same invocation. Times are medians of repeated runs after a warm-up.
"""
import argparse, json, math, os, statistics, subprocess, sys, time

def median_time(fn, min_time=1.0):
    fn()
    ts, start = [], time.perf_counter()
    while len(ts) < 50 and (len(ts) < 3 or time.perf_counter() - start < min_time):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)

# ---- fid: pytorch-fid's FID InceptionV3 (pytorch_fid/inception.py v0.3.0) rebuilt with torch ops
# (pytorch-fid is not installed here): BasicConv2d = conv (no bias) -> BatchNorm(eps 1e-3, eval) ->
# ReLU as pytorch-fid runs it (BN not folded); FIDInceptionA/C/E_1 pool branches use
# avg_pool2d(count_include_pad=False), E_2 max_pool2d. Weights: $NU_INCEPTION_WEIGHTS (safetensors,
# pytorch-fid names) or random with the same shapes (timing does not depend on the values).

def fid_convs():
    """(name, cin, cout, kh, kw) of the 94 BasicConv2d layers in state_dict order."""
    c = [("Conv2d_1a_3x3", 3, 32, 3, 3), ("Conv2d_2a_3x3", 32, 32, 3, 3), ("Conv2d_2b_3x3", 32, 64, 3, 3),
         ("Conv2d_3b_1x1", 64, 80, 1, 1), ("Conv2d_4a_3x3", 80, 192, 3, 3)]
    for n, i, p in [("Mixed_5b", 192, 32), ("Mixed_5c", 256, 64), ("Mixed_5d", 288, 64)]:
        c += [(n + ".branch1x1", i, 64, 1, 1), (n + ".branch5x5_1", i, 48, 1, 1), (n + ".branch5x5_2", 48, 64, 5, 5),
              (n + ".branch3x3dbl_1", i, 64, 1, 1), (n + ".branch3x3dbl_2", 64, 96, 3, 3),
              (n + ".branch3x3dbl_3", 96, 96, 3, 3), (n + ".branch_pool", i, p, 1, 1)]
    c += [("Mixed_6a.branch3x3", 288, 384, 3, 3), ("Mixed_6a.branch3x3dbl_1", 288, 64, 1, 1),
          ("Mixed_6a.branch3x3dbl_2", 64, 96, 3, 3), ("Mixed_6a.branch3x3dbl_3", 96, 96, 3, 3)]
    for n, p in [("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)]:
        c += [(n + ".branch1x1", 768, 192, 1, 1), (n + ".branch7x7_1", 768, p, 1, 1), (n + ".branch7x7_2", p, p, 1, 7),
              (n + ".branch7x7_3", p, 192, 7, 1), (n + ".branch7x7dbl_1", 768, p, 1, 1),
              (n + ".branch7x7dbl_2", p, p, 7, 1), (n + ".branch7x7dbl_3", p, p, 1, 7),
              (n + ".branch7x7dbl_4", p, p, 7, 1), (n + ".branch7x7dbl_5", p, 192, 1, 7),
              (n + ".branch_pool", 768, 192, 1, 1)]
    c += [("Mixed_7a.branch3x3_1", 768, 192, 1, 1), ("Mixed_7a.branch3x3_2", 192, 320, 3, 3),
          ("Mixed_7a.branch7x7x3_1", 768, 192, 1, 1), ("Mixed_7a.branch7x7x3_2", 192, 192, 1, 7),
          ("Mixed_7a.branch7x7x3_3", 192, 192, 7, 1), ("Mixed_7a.branch7x7x3_4", 192, 192, 3, 3)]
    for n, i in [("Mixed_7b", 1280), ("Mixed_7c", 2048)]:
        c += [(n + ".branch1x1", i, 320, 1, 1), (n + ".branch3x3_1", i, 384, 1, 1), (n + ".branch3x3_2a", 384, 384, 1, 3),
              (n + ".branch3x3_2b", 384, 384, 3, 1), (n + ".branch3x3dbl_1", i, 448, 1, 1),
              (n + ".branch3x3dbl_2", 448, 384, 3, 3), (n + ".branch3x3dbl_3a", 384, 384, 1, 3),
              (n + ".branch3x3dbl_3b", 384, 384, 3, 1), (n + ".branch_pool", i, 192, 1, 1)]
    return c

def fid_weights(torch):
    path = os.environ.get("NU_INCEPTION_WEIGHTS")
    if path:
        import struct
        with open(path, "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            hdr = json.loads(f.read(n))
            data = f.read()
        dt = {"F16": torch.float16, "F32": torch.float32, "BF16": torch.bfloat16}
        return {k: torch.frombuffer(bytearray(data[v["data_offsets"][0]:v["data_offsets"][1]]), dtype=dt[v["dtype"]])
                .reshape(v["shape"]).float() for k, v in hdr.items() if k != "__metadata__"}
    P = {}
    for name, ci, co, kh, kw in fid_convs():
        P[name + ".conv.weight"] = torch.randn(co, ci, kh, kw) * math.sqrt(2.0 / (ci * kh * kw))
        P[name + ".bn.weight"], P[name + ".bn.bias"] = torch.ones(co), torch.zeros(co)
        P[name + ".bn.running_mean"], P[name + ".bn.running_var"] = torch.zeros(co), torch.ones(co)
    P["fc.weight"], P["fc.bias"] = torch.randn(1008, 2048) / math.sqrt(2048), torch.zeros(1008)
    return P

def fid_forward(torch, P, fold=False):
    """x: uint8 [N, H, W, 3] -> (pool3 [N, 2048], logits [N, 1008]), as pytorch-fid."""
    F = torch.nn.functional
    Q = {}
    if fold:  # the same network with BatchNorm folded into the convs (not what pytorch-fid runs)
        for name, *_ in fid_convs():
            s = P[name + ".bn.weight"] / torch.sqrt(P[name + ".bn.running_var"] + 1e-3)
            Q[name] = ((P[name + ".conv.weight"] * s[:, None, None, None]).contiguous(),
                       P[name + ".bn.bias"] - P[name + ".bn.running_mean"] * s)
    def bc(x, n, **kw):
        if fold:
            return F.relu(F.conv2d(x, Q[n][0], Q[n][1], **kw))
        x = F.conv2d(x, P[n + ".conv.weight"], None, **kw)
        x = F.batch_norm(x, P[n + ".bn.running_mean"], P[n + ".bn.running_var"], P[n + ".bn.weight"],
                         P[n + ".bn.bias"], False, 0.0, 1e-3)
        return F.relu(x)
    def avgp(x):
        return F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
    def A(x, n):
        b5 = bc(bc(x, n + ".branch5x5_1"), n + ".branch5x5_2", padding=2)
        b3 = bc(bc(bc(x, n + ".branch3x3dbl_1"), n + ".branch3x3dbl_2", padding=1), n + ".branch3x3dbl_3", padding=1)
        return torch.cat([bc(x, n + ".branch1x1"), b5, b3, bc(avgp(x), n + ".branch_pool")], 1)
    def B(x, n):
        bd = bc(bc(bc(x, n + ".branch3x3dbl_1"), n + ".branch3x3dbl_2", padding=1), n + ".branch3x3dbl_3", stride=2)
        return torch.cat([bc(x, n + ".branch3x3", stride=2), bd, F.max_pool2d(x, 3, 2)], 1)
    def C(x, n):
        b7 = bc(bc(bc(x, n + ".branch7x7_1"), n + ".branch7x7_2", padding=(0, 3)), n + ".branch7x7_3", padding=(3, 0))
        bd = bc(x, n + ".branch7x7dbl_1")
        for i, p in [(2, (3, 0)), (3, (0, 3)), (4, (3, 0)), (5, (0, 3))]:
            bd = bc(bd, f"{n}.branch7x7dbl_{i}", padding=p)
        return torch.cat([bc(x, n + ".branch1x1"), b7, bd, bc(avgp(x), n + ".branch_pool")], 1)
    def D(x, n):
        b3 = bc(bc(x, n + ".branch3x3_1"), n + ".branch3x3_2", stride=2)
        b7 = bc(bc(bc(x, n + ".branch7x7x3_1"), n + ".branch7x7x3_2", padding=(0, 3)), n + ".branch7x7x3_3",
                padding=(3, 0))
        return torch.cat([b3, bc(b7, n + ".branch7x7x3_4", stride=2), F.max_pool2d(x, 3, 2)], 1)
    def E(x, n, maxpool):
        b3 = bc(x, n + ".branch3x3_1")
        b3 = torch.cat([bc(b3, n + ".branch3x3_2a", padding=(0, 1)), bc(b3, n + ".branch3x3_2b", padding=(1, 0))], 1)
        bd = bc(bc(x, n + ".branch3x3dbl_1"), n + ".branch3x3dbl_2", padding=1)
        bd = torch.cat([bc(bd, n + ".branch3x3dbl_3a", padding=(0, 1)), bc(bd, n + ".branch3x3dbl_3b", padding=(1, 0))], 1)
        pool = F.max_pool2d(x, 3, 1, 1) if maxpool else avgp(x)
        return torch.cat([bc(x, n + ".branch1x1"), b3, bd, bc(pool, n + ".branch_pool")], 1)
    def forward(u8):
        x = u8.permute(0, 3, 1, 2).float() / 255  # ToTensor
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        x = 2 * x - 1
        x = bc(x, "Conv2d_1a_3x3", stride=2)
        x = bc(x, "Conv2d_2a_3x3")
        x = F.max_pool2d(bc(x, "Conv2d_2b_3x3", padding=1), 3, 2)
        x = F.max_pool2d(bc(bc(x, "Conv2d_3b_1x1"), "Conv2d_4a_3x3"), 3, 2)
        for n in ("Mixed_5b", "Mixed_5c", "Mixed_5d"):
            x = A(x, n)
        x = B(x, "Mixed_6a")
        for n in ("Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"):
            x = C(x, n)
        x = E(E(D(x, "Mixed_7a"), "Mixed_7b", False), "Mixed_7c", True)
        pool3 = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return pool3, F.linear(pool3, P["fc.weight"], P["fc.bias"])
    return forward

def fid_case(torch, rows, min_time, batch=int(os.environ.get("NU_BENCH_FID_BATCH", "50"))):
    P = fid_weights(torch)
    x = torch.randint(0, 256, (batch, 299, 299, 3), dtype=torch.uint8)
    net = fid_forward(torch, P)
    rows[f"fid inception 299x299 b{batch}"] = median_time(lambda: net(x), min_time) / batch
    net = fid_forward(torch, P, fold=True)
    rows[f"fid inception 299x299 b{batch} (torch, BN folded)"] = median_time(lambda: net(x), min_time) / batch

# ---- unet: the SD 1.5 UNet (diffusers UNet2DConditionModel semantics: 320/640/1280/1280 channels,
# 2 resnets per level, cross-attention at the first three levels, 8 heads, context 768, GEGLU
# feed-forward) rebuilt with plain torch modules (diffusers is not installed), random default init.
# One CFG step = the UNet on batch 2 (uncond + cond) + the guidance combine, as `nuance bench unet`.
# PyTorch computes in f32 (it has no f16 / q8_0 CPU GEMM of its own), so its time is the baseline
# of the f16 and q8_0 rows too.

def unet_sd15(torch):
    nn, F = torch.nn, torch.nn.functional

    class Resnet(nn.Module):
        def __init__(s, cin, cout, temb):
            super().__init__()
            s.norm1, s.conv1 = nn.GroupNorm(32, cin, eps=1e-5), nn.Conv2d(cin, cout, 3, padding=1)
            s.time_emb_proj = nn.Linear(temb, cout)
            s.norm2, s.conv2 = nn.GroupNorm(32, cout, eps=1e-5), nn.Conv2d(cout, cout, 3, padding=1)
            s.conv_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None
        def forward(s, x, temb):
            h = s.conv1(F.silu(s.norm1(x))) + s.time_emb_proj(F.silu(temb))[:, :, None, None]
            h = s.conv2(F.silu(s.norm2(h)))
            return h + (s.conv_shortcut(x) if s.conv_shortcut is not None else x)

    class Attn(nn.Module):
        def __init__(s, d, dc, heads):
            super().__init__()
            s.heads = heads
            s.to_q, s.to_k, s.to_v = nn.Linear(d, d, bias=False), nn.Linear(dc, d, bias=False), nn.Linear(dc, d, bias=False)
            s.to_out = nn.ModuleList([nn.Linear(d, d)])
        def forward(s, x, ctx=None):
            ctx = x if ctx is None else ctx
            B, T, D = x.shape
            H = s.heads
            q = s.to_q(x).view(B, T, H, D // H).transpose(1, 2)
            k = s.to_k(ctx).view(B, -1, H, D // H).transpose(1, 2)
            v = s.to_v(ctx).view(B, -1, H, D // H).transpose(1, 2)
            if hasattr(F, "scaled_dot_product_attention"):  # torch >= 2.0: fused
                a = F.scaled_dot_product_attention(q, k, v)
            else:  # torch 1.13: diffusers' AttnProcessor (baddbmm + softmax + bmm)
                a = torch.softmax(q @ k.transpose(-1, -2) * (D // H) ** -0.5, -1) @ v
            return s.to_out[0](a.transpose(1, 2).reshape(B, T, D))

    class Block(nn.Module):
        def __init__(s, d, dc, heads):
            super().__init__()
            s.norm1, s.attn1 = nn.LayerNorm(d), Attn(d, d, heads)
            s.norm2, s.attn2 = nn.LayerNorm(d), Attn(d, dc, heads)
            s.norm3, s.proj, s.out = nn.LayerNorm(d), nn.Linear(d, 8 * d), nn.Linear(4 * d, d)
        def forward(s, x, ctx):
            x = s.attn1(s.norm1(x)) + x
            x = s.attn2(s.norm2(x), ctx) + x
            h, g = s.proj(s.norm3(x)).chunk(2, dim=-1)  # GEGLU
            return s.out(h * F.gelu(g)) + x

    class Transformer(nn.Module):
        def __init__(s, c, dc, heads):
            super().__init__()
            s.norm, s.proj_in, s.proj_out = nn.GroupNorm(32, c, eps=1e-6), nn.Conv2d(c, c, 1), nn.Conv2d(c, c, 1)
            s.block = Block(c, dc, heads)
        def forward(s, x, ctx):
            B, C, H, W = x.shape
            h = s.proj_in(s.norm(x)).permute(0, 2, 3, 1).reshape(B, H * W, C)
            h = s.block(h, ctx)
            return s.proj_out(h.reshape(B, H, W, C).permute(0, 3, 1, 2)) + x

    class UNet(nn.Module):
        def __init__(s, ch=(320, 640, 1280, 1280), lpb=2, heads=8, dc=768, attn=(True, True, True, False)):
            super().__init__()
            s.ch, s.lpb, s.attn, n, ted = ch, lpb, attn, len(ch), 4 * ch[0]
            s.conv_in = nn.Conv2d(4, ch[0], 3, padding=1)
            s.lin1, s.lin2 = nn.Linear(ch[0], ted), nn.Linear(ted, ted)
            s.down_res, s.down_attn, s.down_conv = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
            prev = ch[0]
            for L in range(n):
                s.down_res.append(nn.ModuleList([Resnet(prev if j == 0 else ch[L], ch[L], ted) for j in range(lpb)]))
                s.down_attn.append(nn.ModuleList([Transformer(ch[L], dc, heads) for _ in range(lpb)] if attn[L] else []))
                s.down_conv.append(nn.Conv2d(ch[L], ch[L], 3, stride=2, padding=1) if L < n - 1 else nn.Identity())
                prev = ch[L]
            s.mid = nn.ModuleList([Resnet(ch[-1], ch[-1], ted), Transformer(ch[-1], dc, heads), Resnet(ch[-1], ch[-1], ted)])
            s.up_res, s.up_attn, s.up_conv = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
            rch = list(reversed(ch))
            for i in range(n):
                L, out, inp = n - 1 - i, rch[i], rch[min(i + 1, n - 1)]
                s.up_res.append(nn.ModuleList([Resnet((prev if j == 0 else out) + (inp if j == lpb else out), out, ted)
                                               for j in range(lpb + 1)]))
                s.up_attn.append(nn.ModuleList([Transformer(out, dc, heads) for _ in range(lpb + 1)] if attn[L] else []))
                s.up_conv.append(nn.Conv2d(out, out, 3, padding=1) if i < n - 1 else nn.Identity())
                prev = out
            s.norm_out, s.conv_out = nn.GroupNorm(32, ch[0], eps=1e-5), nn.Conv2d(ch[0], 4, 3, padding=1)
        def forward(s, x, t, ctx):
            half = s.ch[0] // 2  # get_timestep_embedding(flip_sin_to_cos=True, shift 0)
            e = t[:, None].float() * torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)[None]
            temb = s.lin2(F.silu(s.lin1(torch.cat([torch.cos(e), torch.sin(e)], -1))))
            h = s.conv_in(x)
            skips, n = [h], len(s.ch)
            for L in range(n):
                for j in range(s.lpb):
                    h = s.down_res[L][j](h, temb)
                    if s.attn[L]:
                        h = s.down_attn[L][j](h, ctx)
                    skips.append(h)
                if L < n - 1:
                    h = s.down_conv[L](h)
                    skips.append(h)
            h = s.mid[2](s.mid[1](s.mid[0](h, temb), ctx), temb)
            for i in range(n):
                for j in range(s.lpb + 1):
                    h = s.up_res[i][j](torch.cat([h, skips.pop()], 1), temb)
                    if s.attn[n - 1 - i]:
                        h = s.up_attn[i][j](h, ctx)
                if i < n - 1:
                    h = s.up_conv[i](F.interpolate(h, scale_factor=2.0, mode="nearest"))
            return s.conv_out(F.silu(s.norm_out(h)))

    return UNet().eval()

def unet_case(torch, rows, min_time):
    net = unet_sd15(torch)
    n_params = sum(p.numel() for p in net.parameters())
    assert n_params == 859520964, n_params  # SD 1.5's UNet
    ctx, t = torch.randn(2, 77, 768), torch.tensor([500.0, 500.0])
    for px in (256, 512):
        x = torch.randn(2, 4, px // 8, px // 8)
        def step():
            o = net(x, t, ctx)
            return o[:1] + 7.5 * (o[1:] - o[:1])
        sec = median_time(step, min_time)
        for ty in ("f32", "f16", "q8_0"):
            rows[f"unet sd1.5 {ty} {px}x{px} cfg-step"] = sec

def torch_cases(torch, groups, min_time):
    F = torch.nn.functional
    rows = {}
    torch.manual_seed(0)
    with torch.no_grad():
        if "gemm" in groups:
            for M, N, K in [(2048, 2048, 2048), (320, 4096, 2880), (640, 1024, 5760)]:
                a, b = torch.randn(M, K), torch.randn(K, N)
                rows[f"gemm f32 {M}x{N}x{K}"] = median_time(lambda: torch.mm(a, b), min_time)
                w16 = torch.randn(N, K).half()
                # PyTorch has no CPU f16-weight GEMM kernel of its own: it converts, then multiplies
                rows[f"gemm f16 {M}x{N}x{K}"] = median_time(lambda: F.linear(a, w16.float()), min_time)
        if "conv" in groups:
            for C, H in [(320, 64), (640, 32)]:
                x, w, bias = torch.randn(1, C, H, H), torch.randn(C, C, 3, 3), torch.randn(C)
                rows[f"conv3x3 f32 {C} {H}x{H}"] = median_time(lambda: F.conv2d(x, w, bias, padding=1), min_time)
        if "attention" in groups:
            NH, HD = 8, 40
            for Tq, Tk in [(4096, 4096), (1024, 1024), (4096, 77)]:
                q, k, v = torch.randn(1, NH, Tq, HD), torch.randn(1, NH, Tk, HD), torch.randn(1, NH, Tk, HD)
                s = 1.0 / math.sqrt(HD)
                name = f"attention f32 {NH}x{HD} T={Tq}" if Tq == Tk else f"attention f32 {NH}x{HD} T={Tq}x{Tk}"
                rows[name] = median_time(lambda: torch.softmax(q @ k.transpose(-1, -2) * s, -1) @ v, min_time)
        if "fid" in groups:
            fid_case(torch, rows, min_time)
        if "unet" in groups:
            unet_case(torch, rows, min_time)
    return rows

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cases", nargs="*", default=["gemm", "conv", "attention"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--nuance", default=os.path.join(os.path.dirname(__file__), "..", "build", "nuance"))
    ap.add_argument("--min-time", type=float, default=1.0)
    args = ap.parse_args()
    out = subprocess.run([args.nuance, "bench", "--json", "-t", str(args.threads), "--min-time", str(args.min_time)]
                         + args.cases, check=True, capture_output=True, text=True).stdout
    nu = {r["name"]: r for r in json.loads(out)}
    import torch
    torch.set_num_threads(args.threads)
    pt = torch_cases(torch, set(args.cases), args.min_time)
    print(f"torch {torch.__version__}, {args.threads} threads")
    print(f"{'case':40s} {'nuance ms':>10s} {'torch ms':>10s} {'speedup':>8s}")
    for name, r in nu.items():
        if name in pt:
            print(f"{name:40s} {r['seconds']*1e3:10.2f} {pt[name]*1e3:10.2f} {pt[name]/r['seconds']:7.2f}x")
    for name in pt:
        if name not in nu:
            print(f"{name:40s} {'-':>10s} {pt[name]*1e3:10.2f}")

if __name__ == "__main__":
    sys.exit(main())
