#!/usr/bin/python3
"""make_metrics_fixture.py — numpy/scipy reference values for src/metrics (KID, IS, precision/
recall/density/coverage, Fréchet distance on singular and ill-conditioned covariances).
Writes tests/fixtures/metrics.safetensors (read by tests/test_metrics.c). Small dims only.

Each reference transcribes the upstream tool's formula (not its code) in float64:
  KID   clean-fid kernel_distance (np.random.seed(seed) first; per subset x from feats2, then y
        from feats1 via np.random.choice(n, m, replace=False)); per-subset values give the std.
        kid.<c>.cleanfid_f32 is the same in float32 as clean-fid really computes it (documentation).
  IS    torch-fidelity isc_features_to_metric (RandomState(2020).permutation shuffle, double
        softmax, split k = rows [k N / s, (k+1) N / s), exp(mean KL), np.mean / np.std)
        and the unshuffled original (improved-gan) variant.
  PRDC  precision/recall as torch-fidelity's calculate_precision_recall_full (kthvalue(k+1) radii,
        <=), density/coverage as prdc's compute_prdc (strict <).
  FID   pytorch-fid calculate_frechet_distance with scipy.linalg.sqrtm (fid_scipy; NaN where it
        raises), and an exact value: commuting covariances (same eigenvectors: tr sqrt(S1 S2) =
        sum sqrt(a_i b_i)) or low-rank covariances from samples (tr sqrt(S1 S2) = nuclear norm of
        Ac Bc^T / sqrt((n1-1)(n2-1)), Ac/Bc centred samples).
  rng   np.random.RandomState(seed).permutation(n) prefixes (checks the MT19937 port directly).
Run: /usr/bin/python3 scripts/make_metrics_fixture.py   (Debian python3-numpy 1.24, python3-scipy
1.10, python3-torch 1.13 only for the safetensors writer)
"""
import os

import numpy as np
import scipy.linalg
import torch
from st_write import save as st_save

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "metrics.safetensors")


def t(a, dtype=None):
    a = np.ascontiguousarray(a)
    if dtype is not None:
        a = a.astype(dtype)
    return torch.from_numpy(a.copy())


def kid_cleanfid(f1, f2, num_subsets, max_subset_size, seed, dtype):
    np.random.seed(seed)
    f1 = f1.astype(dtype)
    f2 = f2.astype(dtype)
    n = f1.shape[1]
    m = min(min(f1.shape[0], f2.shape[0]), max_subset_size)
    vals = []
    for _ in range(num_subsets):
        x = f2[np.random.choice(f2.shape[0], m, replace=False)]
        y = f1[np.random.choice(f1.shape[0], m, replace=False)]
        a = (x @ x.T / n + 1) ** 3 + (y @ y.T / n + 1) ** 3
        b = (x @ y.T / n + 1) ** 3
        vals.append(((a.sum() - np.diag(a).sum()) / (m - 1) - b.sum() * 2 / m) / m)
    vals = np.array(vals, np.float64)
    return vals.mean(), vals.std()


def inception_score(logits, splits, shuffle, seed):
    n = logits.shape[0]
    x = logits.astype(np.float64)
    if shuffle:
        x = x[np.random.RandomState(seed).permutation(n)]
    x = x - x.max(axis=1, keepdims=True)
    logp = x - np.log(np.exp(x).sum(axis=1, keepdims=True))
    p = np.exp(logp)
    scores = []
    for i in range(splits):
        pc, lc = p[i * n // splits:(i + 1) * n // splits], logp[i * n // splits:(i + 1) * n // splits]
        q = pc.mean(axis=0, keepdims=True)
        scores.append(np.exp((pc * (lc - np.log(q))).sum(axis=1).mean()))
    return np.mean(scores), np.std(scores)


def cdist(a, b):
    return np.sqrt(np.maximum(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1), 0))


def prdc(real, fake, k):
    real = real.astype(np.float64)
    fake = fake.astype(np.float64)
    r_real = np.sort(cdist(real, real), axis=1)[:, k]  # kthvalue(k + 1): self at index 0
    r_fake = np.sort(cdist(fake, fake), axis=1)[:, k]
    d_fr = cdist(fake, real)  # [n2, n1]
    precision = (d_fr <= r_real[None, :]).any(axis=1).mean()
    recall = (d_fr.T <= r_fake[None, :]).any(axis=1).mean()
    density = (1.0 / k) * (d_fr < r_real[None, :]).sum(axis=1).mean()
    coverage = (d_fr.min(axis=0) < r_real).mean()
    return precision, recall, density, coverage


def fid_scipy(mu1, s1, mu2, s2, eps=1e-6):
    """pytorch-fid v0.3.0 calculate_frechet_distance (formula and fallbacks)."""
    diff = mu1 - mu2
    covmean, _ = scipy.linalg.sqrtm(s1.dot(s2), disp=False)
    if not np.isfinite(covmean).all():
        offset = np.eye(s1.shape[0]) * eps
        covmean = scipy.linalg.sqrtm((s1 + offset).dot(s2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            return float("nan")
        covmean = covmean.real
    return diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)


def random_rotation(rng, d):
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))


def main():
    out = {}
    rng = np.random.RandomState(4242)

    # ---- numpy RandomState permutations
    for seed, n in [(0, 10), (123, 1000), (2020, 53), (7, 100003)]:
        perm = np.random.RandomState(seed).permutation(n)[:64]
        out[f"rng.perm.{seed}.{n}"] = t(perm, np.int64)

    # ---- KID
    kid_cases = [("a", 40, 33, 16, 7, 25, 123), ("b", 40, 33, 16, 5, 1000, 0), ("c", 12, 9, 5, 100, 1000, 7)]
    for name, n1, n2, d, S, ss, seed in kid_cases:
        f1 = (rng.standard_normal((n1, d)) * 0.7 + 0.4).astype(np.float32)
        f2 = (rng.standard_normal((n2, d)) * 0.9 + 0.2).astype(np.float32)
        mean, std = kid_cleanfid(f1, f2, S, ss, seed, np.float64)
        mean32, _ = kid_cleanfid(f1, f2, S, ss, seed, np.float32)
        out[f"kid.{name}.f1"] = t(f1)
        out[f"kid.{name}.f2"] = t(f2)
        out[f"kid.{name}.params"] = t(np.array([S, ss, seed], np.int64))
        out[f"kid.{name}.expected"] = t(np.array([mean, std], np.float64))
        out[f"kid.{name}.cleanfid_f32"] = t(np.array([mean32], np.float64))
        print(f"kid {name}: {mean:.12g} +- {std:.6g} (clean-fid float32: {mean32:.12g}, rel {abs(mean32-mean)/abs(mean):.2g})")

    # ---- Inception Score
    logits = (rng.standard_normal((53, 37)) * 3).astype(np.float32)
    logits[:, 5] += 4  # a popular class, so the scores are not trivial
    out["is.logits"] = t(logits)
    res = []
    for splits, shuffle, seed in [(10, True, 2020), (4, False, 0), (1, False, 0), (53, True, 9)]:
        m, s = inception_score(logits, splits, shuffle, seed)
        res.append([splits, float(shuffle), seed, m, s])
        print(f"IS splits={splits} shuffle={shuffle}: {m:.12g} +- {s:.6g}")
    out["is.cases"] = t(np.array(res, np.float64))

    # ---- precision / recall / density / coverage
    real = rng.standard_normal((60, 8)).astype(np.float32)
    fake = (rng.standard_normal((50, 8)) * 1.3 + 0.5).astype(np.float32)
    out["prdc.real"] = t(real)
    out["prdc.fake"] = t(fake)
    res = []
    for kk in [1, 3, 5]:
        p, r, de, co = prdc(real, fake, kk)
        res.append([kk, p, r, de, co])
        print(f"prdc k={kk}: P {p:.6f} R {r:.6f} D {de:.6f} C {co:.6f}")
    out["prdc.cases"] = t(np.array(res, np.float64))

    # ---- Fréchet distance: singular and ill-conditioned covariances
    fid_cases = []

    def add(name, mu1, s1, mu2, s2, exact):
        fs = fid_scipy(mu1, s1, mu2, s2)
        out[f"fid.{name}.mu1"], out[f"fid.{name}.sigma1"] = t(mu1), t(s1)
        out[f"fid.{name}.mu2"], out[f"fid.{name}.sigma2"] = t(mu2), t(s2)
        out[f"fid.{name}.expected"] = t(np.array([exact, fs], np.float64))
        fid_cases.append(name)
        print(f"fid {name}: exact {exact:.12g} scipy {fs:.12g} abs err {abs(fs-exact):.3g}")

    def from_samples(name, a, b):
        mu1, mu2 = a.mean(0), b.mean(0)
        s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
        ac, bc = a - mu1, b - mu2
        nuc = np.linalg.svd(ac @ bc.T, compute_uv=False).sum() / np.sqrt((a.shape[0] - 1) * (b.shape[0] - 1))
        diff = mu1 - mu2
        add(name, mu1, s1, mu2, s2, diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2 * nuc)

    # n << dim: both covariances singular (rank n - 1), as the reference's folder FID
    from_samples("lowrank", rng.standard_normal((10, 48)) * 0.5 + 0.3, rng.standard_normal((14, 48)) * 0.8)
    # rank 1 against rank 2
    from_samples("rank1", rng.standard_normal((2, 24)), rng.standard_normal((3, 24)) + 1)
    # many samples but a rank-deficient feature space (features in a 6-d subspace of 40)
    basis = rng.standard_normal((6, 40))
    from_samples("subspace", rng.standard_normal((200, 6)) @ basis, (rng.standard_normal((150, 6)) * 1.5) @ basis + 0.2)
    # commuting, condition number 1e12 on each side (eigenvalues 1e-10 .. 1e2)
    d = 32
    q = random_rotation(rng, d)
    a = np.logspace(-10, 2, d)
    b = rng.permutation(np.logspace(-10, 2, d))
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    s1, s2 = (q * a) @ q.T, (q * b) @ q.T
    s1, s2 = (s1 + s1.T) / 2, (s2 + s2.T) / 2
    diff = mu1 - mu2
    add("illcond", mu1, s1, mu2, s2, diff.dot(diff) + a.sum() + b.sum() - 2 * np.sqrt(a * b).sum())
    # identical distributions: FID 0 exactly (absolute error test)
    add("same", mu1, s1, mu1.copy(), s1.copy(), 0.0)
    # one dimension
    add("dim1", np.array([0.5]), np.array([[4.0]]), np.array([-1.0]), np.array([[0.25]]), 2.25 + 4 + 0.25 - 2 * 1.0)
    out["fid.names"] = t(np.frombuffer(",".join(fid_cases).encode(), np.uint8))

    st_save(OUT, out)
    print(OUT, os.path.getsize(OUT), "bytes")


if __name__ == "__main__":
    main()
