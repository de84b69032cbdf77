#!/usr/bin/python3
"""make_npz_fixture.py — small .npz archives written by numpy itself, read by tests/test_npz.c
(and used as seeds in fuzz/corpus/npz/).

Every array holds values the test recomputes from a formula, so no second reference file is
needed:
  stats_stored.npz      np.savez(mu, sigma)            pytorch-fid's stats layout, float64
  stats_compressed.npz  np.savez_compressed(mu, sigma) the same, deflate (pytorch-fid --save-stats)
      mu[i] = 0.5 i - 1 (i < 8); sigma[i, j] = 1 / (1 + |i - j|) + (i == j)
  dtypes.npz            np.savez_compressed of
      f4 [2, 3] = 0.25 k - 1;  f2 [5] = k / 4;  i8 [4] = k * 10^12 - 3;  i4 [3] = -7 k;
      i2 [3] = 300 k - 2;  i1 [4] = k - 2;  u1 [6] = 40 k;  b1 [5] = k % 2 == 1;
      scalar () float64 = 3.5;  empty [0, 3] float32;  be '>f8' [4] = 1.5 k - 2;
      fortran 'F' order float64 [3, 4] with value 10 i + j at [i, j];  f4x3 [2, 3, 4] = k / 8
    (k = flat C-order index)
  object.npz            np.savez with an object (pickled) array -> must be refused
Run: /usr/bin/python3 scripts/make_npz_fixture.py   (Debian python3-numpy 1.24)
"""
import os

import numpy as np

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "npz")


def k(shape, dtype):
    return np.arange(int(np.prod(shape)), dtype=np.float64).reshape(shape).astype(dtype)


def main():
    os.makedirs(OUT, exist_ok=True)
    i = np.arange(8)
    mu = 0.5 * i - 1.0
    sigma = 1.0 / (1.0 + np.abs(i[:, None] - i[None, :])) + np.eye(8)
    np.savez(os.path.join(OUT, "stats_stored.npz"), mu=mu, sigma=sigma)
    np.savez_compressed(os.path.join(OUT, "stats_compressed.npz"), mu=mu, sigma=sigma)

    ii, jj = np.meshgrid(np.arange(3), np.arange(4), indexing="ij")
    fortran = np.asfortranarray((10 * ii + jj).astype(np.float64))
    assert fortran.flags.f_contiguous and not fortran.flags.c_contiguous
    arrays = {
        "f4": k((2, 3), np.float64) * 0.25 - 1,
        "f2": (k((5,), np.float64) / 4).astype(np.float16),
        "i8": np.arange(4, dtype=np.int64) * 10**12 - 3,
        "i4": (np.arange(3) * -7).astype(np.int32),
        "i2": (np.arange(3) * 300 - 2).astype(np.int16),
        "i1": (np.arange(4) - 2).astype(np.int8),
        "u1": (np.arange(6) * 40).astype(np.uint8),
        "b1": (np.arange(5) % 2 == 1),
        "scalar": np.float64(3.5),
        "empty": np.zeros((0, 3), np.float32),
        "be": (np.arange(4) * 1.5 - 2).astype(">f8"),
        "fortran": fortran,
        "f4x3": (k((2, 3, 4), np.float64) / 8).astype(np.float32),
    }
    arrays["f4"] = arrays["f4"].astype(np.float32)
    np.savez_compressed(os.path.join(OUT, "dtypes.npz"), **arrays)

    obj = np.empty(2, dtype=object)
    obj[0], obj[1] = "a", {"b": 1}
    np.savez(os.path.join(OUT, "object.npz"), obj=obj)

    # read back with numpy as a self-check
    with np.load(os.path.join(OUT, "dtypes.npz")) as z:
        for name, a in arrays.items():
            assert np.array_equal(z[name], a), name
    for f in sorted(os.listdir(OUT)):
        print(f, os.path.getsize(os.path.join(OUT, f)), "bytes")


if __name__ == "__main__":
    main()
