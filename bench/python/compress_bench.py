"""Peer side of bench/compress.bench.ts: mergekit 0.1.5 (on PYTHONPATH) for the delta-space
merges and model_stock, torch.svd_lowrank for the re-factoring and extraction, the
safetensors library for loading, torch for int8 quantization and the NVlabs/EoRA recipe.

  compress_bench.py DIR   reads DIR/bench.json, prints one JSON object (seconds per step,
                          peak RSS, torch threads, peer versions)."""

import importlib.metadata
import json
import os
import resource
import sys
import time

import numpy as np
import torch
from mergekit.merge_methods import registry
from mergekit.merge_methods.base import TensorEntry, TensorGroup
from safetensors.torch import load_file


def main():
    d = sys.argv[1]
    cfg = json.load(open(os.path.join(d, "bench.json")))
    shapes, rank, density, weights = cfg["shapes"], cfg["rank"], cfg["density"], cfg["weights"]

    def f32(name, shape):
        return torch.from_numpy(np.fromfile(os.path.join(d, name), dtype="<f4").reshape(shape))

    adapters = [
        {m: (f32(f[m]["A"], [rank, shapes[m][1]]), f32(f[m]["B"], [shapes[m][0], rank])) for m in shapes}
        for f in cfg["files"]
    ]
    seconds = {}

    def group(tensors):
        base = torch.zeros_like(tensors[0])
        entries = [TensorEntry(id="base", tensor=base, is_base=True)]
        entries += [TensorEntry(id=f"m{i}", tensor=t) for i, t in enumerate(tensors)]
        return TensorGroup(entries=entries)

    ids = [f"m{i}" for i in range(len(adapters))]
    for method in ["task_arithmetic", "ties", "dare_ties"]:
        mm = registry.get(method)
        defaults = {p.name: p.default for p in mm.spec.parameters}
        t0 = time.perf_counter()
        for m in shapes:
            deltas = [2 * (b @ a) for a, b in (ad[m] for ad in adapters)]
            mix = mm.merge_group(
                group(deltas),
                weight=dict(zip(ids, weights)),
                density={i: density for i in ids},
                normalize=defaults["normalize"],
                rescale=defaults["rescale"],
                int8_mask=False,
                **{"lambda": 1.0},
            )
            torch.svd_lowrank(mix, q=rank + 10, niter=4)
            del deltas, mix
        seconds[f"mergekit {method}"] = time.perf_counter() - t0

    ms = registry.get("model_stock")
    t0 = time.perf_counter()
    for m in shapes:
        deltas = [2 * (b @ a) for a, b in (ad[m] for ad in adapters)]
        ms.merge_group(group(deltas), filter_wise=False)
        del deltas
    seconds["model_stock"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    b, f = load_file(os.path.join(d, "base.safetensors")), load_file(os.path.join(d, "ft.safetensors"))
    for k in f:
        torch.svd_lowrank(f[k] - b[k], q=rank + 10, niter=4)
    seconds["extract"] = time.perf_counter() - t0
    del b, f

    t0 = time.perf_counter()
    t = load_file(os.path.join(d, "base.safetensors"))
    seconds["safetensors open (F32)"] = time.perf_counter() - t0
    del t
    t0 = time.perf_counter()
    t = {k: v.clone() for k, v in load_file(os.path.join(d, "base.safetensors")).items()}
    seconds["safetensors load F32 -> owned f32"] = time.perf_counter() - t0
    del t
    t0 = time.perf_counter()
    t = {k: v.float() for k, v in load_file(os.path.join(d, "base-bf16.safetensors")).items()}
    seconds["safetensors load BF16 -> f32"] = time.perf_counter() - t0
    del t

    t0 = time.perf_counter()
    for ad in adapters:
        for a, bb in ad.values():
            for x in (a, bb * 2):
                s = x.abs().amax(dim=1, keepdim=True) / 127
                torch.round(x / torch.where(s == 0, torch.ones_like(s), s)).clamp(-127, 127).to(torch.int8)
    seconds["int8 quantize (factors)"] = time.perf_counter() - t0

    n, tok, r = cfg["eora_dim"], cfg["tokens"], rank
    w = f32("eora_w.f32", [n, n])
    x = f32("eora_x.f32", [tok, n])
    hat = torch.round(w / 0.01) * 0.01
    t0 = time.perf_counter()
    delta = (w - hat).double()
    xd = x.double()
    lam, q = torch.linalg.eigh(xd.T @ xd)
    lam = torch.clamp(torch.where(lam < 0, lam[lam > 0].min(), lam), min=1e-10 * lam.max())
    u, s, vh = torch.linalg.svd(delta @ q @ torch.diag(lam.sqrt()), full_matrices=False)
    bm = u[:, :r] * s[:r].sqrt()
    am = (s[:r].sqrt()[:, None] * vh[:r]) @ torch.diag(1 / lam.sqrt()) @ q.T
    (bm.float(), am.float())
    seconds[f"EoRA {n}\u00b2, {tok} tokens"] = time.perf_counter() - t0

    print(
        json.dumps(
            {
                "seconds": seconds,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "threads": torch.get_num_threads(),
                "versions": {
                    "torch": torch.__version__,
                    "mergekit": importlib.metadata.version("mergekit"),
                    "safetensors": importlib.metadata.version("safetensors"),
                },
            }
        )
    )


if __name__ == "__main__":
    main()
