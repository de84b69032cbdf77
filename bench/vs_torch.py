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
