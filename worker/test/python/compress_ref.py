"""PyTorch/numpy references for the dense compressions (worker/test/compress-base.test.ts):
EoRA as NVlabs/EoRA computes it (fp64 covariance, eigh, floor, SVD in the scaled space),
CUR with DEIM on the exact SVD, and int8 row-wise quantization read back from our
safetensors file with the safetensors library. Usage: compress_ref.py <workdir>."""

import sys

import numpy as np
import torch
from safetensors.torch import load_file
from safetensors import safe_open

import f32io


def eora(work, c):
    delta = torch.from_numpy(f32io.load(work, c["delta"]).copy()).double()
    x = torch.from_numpy(f32io.load(work, c["x"]).copy()).double()
    cov = x.T @ x
    lam, q = torch.linalg.eigh(cov)
    pos = lam[lam > 0]
    lam = torch.where(lam < 0, pos.min(), lam)
    lam = torch.clamp(lam, min=c["floor"] * lam.max())
    scaled = delta @ q @ torch.diag(lam.sqrt())
    u, s, vh = torch.linalg.svd(scaled, full_matrices=False)
    r = c["rank"]
    b = u[:, :r] * s[:r].sqrt()
    a = (s[:r].sqrt()[:, None] * vh[:r]) @ torch.diag(1 / lam.sqrt()) @ q.T
    # plain-SVD baseline (LoRC): its calibration error must not beat EoRA's
    u2, s2, vh2 = torch.linalg.svd(delta, full_matrices=False)
    plain = (u2[:, :r] * s2[:r]) @ vh2[:r]
    return {
        "ba": f32io.save(work, c["id"] + "-ba", (b @ a).float().numpy()),
        "gap": float((s[r - 1] - s[r]) / s[0]),
        "error_after": float(torch.linalg.norm((delta - b @ a) @ x.T)),
        "error_plain": float(torch.linalg.norm((delta - plain) @ x.T)),
    }


def deim(v):
    p = [int(np.argmax(np.abs(v[:, 0])))]
    for j in range(1, v.shape[1]):
        coef = np.linalg.solve(v[p, :j], v[p, j])
        res = v[:, j] - v[:, :j] @ coef
        p.append(int(np.argmax(np.abs(res))))
    return p


def cur(work, c):
    w = f32io.load(work, c["w"]).astype(np.float64)
    n = f32io.load(work, c["colw"]).astype(np.float64) if "colw" in c else np.ones(w.shape[1])
    u, s, vh = np.linalg.svd(w * n[None, :], full_matrices=False)
    k = c["rank"]
    rows, cols = deim(u[:, :k]), deim(vh[:k].T)
    cm, rm = w[:, cols], w[rows, :]
    um = np.linalg.pinv(cm, rcond=1e-6) @ w @ np.linalg.pinv(rm, rcond=1e-6)
    return {"rows": rows, "cols": cols, "cur": f32io.save(work, c["id"] + "-cur", cm @ um @ rm)}


def quant(work, c):
    path = c["file"]
    with safe_open(path, framework="pt") as f:
        meta = f.metadata()
    tensors = load_file(path)
    out = {"metadata": meta, "tensors": {}}
    for key, t in tensors.items():
        if key.endswith("_scale"):
            continue
        scale = tensors[key + "_scale"]
        deq = t.float() * scale  # what any consumer does
        orig = torch.from_numpy(f32io.load(work, c["orig"][key]).copy())
        amax = orig.abs().amax(dim=1, keepdim=True)
        ref_scale = amax / 127
        ref_q = torch.round(orig / torch.where(ref_scale == 0, torch.ones_like(ref_scale), ref_scale)).clamp(-127, 127).to(torch.int8)
        out["tensors"][key] = {
            "dtype": str(t.dtype),
            "q_equal": bool(torch.equal(ref_q, t)),
            "scale_equal": bool(torch.equal(ref_scale, scale)),
            "deq": f32io.save(work, c["id"] + key.replace(".", "_"), deq.numpy()),
        }
    return out


def main():
    work = sys.argv[1]
    runners = {"eora": eora, "cur": cur, "quant": quant}
    f32io.write_json(work, "results.json", {c["id"]: runners[c["kind"]](work, c) for c in f32io.read_json(work, "cases.json")})


if __name__ == "__main__":
    main()
