"""PEFT side of bench/merge.bench.ts.

  peft_merge_bench.py DIR   reads DIR/bench.json (module shapes, adapters' factor files,
                            combinations, spectra layers), builds a Llama-shaped stack of
                            uninitialised Linear layers (torch.nn.utils.skip_init: the
                            pages are never touched, so a 7B-shaped base costs no memory),
                            attaches the adapters with PEFT, loads the same factors and times
                            add_weighted_adapter per combination, then the dense spectra
                            baseline (torch.linalg.svdvals of get_delta_weight per module) and
                            the rank-reduction baseline (torch.svd_lowrank of the same deltas).
                            Prints one JSON object: seconds per step and peak RSS.
"""

import json
import os
import resource
import sys
import time

import torch
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "worker", "test", "python"))
from f32io import load, read_json  # noqa: E402
from peft import LoraConfig, get_peft_model  # noqa: E402
from peft.tuners.lora import LoraLayer  # noqa: E402

PREFIX = "base_model.model."


class Stack(nn.Module):
    """model.layers.{i}.{self_attn|mlp}.{proj}: only the shapes of a Llama block."""

    def __init__(self, layers, shapes, device):
        super().__init__()
        self.model = nn.Module()
        self.model.layers = nn.ModuleList()
        for _ in range(layers):
            block = nn.Module()
            block.self_attn, block.mlp = nn.Module(), nn.Module()
            for proj, (out_f, in_f) in shapes.items():
                parent = block.self_attn if proj in ("q_proj", "k_proj", "v_proj", "o_proj") else block.mlp
                setattr(parent, proj, nn.utils.skip_init(nn.Linear, in_f, out_f, bias=False, device=device))
            self.model.layers.append(block)


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(d):
    spec = read_json(d, "bench.json")
    dev = spec.get("device", "cpu")
    gpu = dev != "cpu"

    def now():  # GPU work is asynchronous: wait for it before reading the clock
        if gpu:
            torch.cuda.synchronize()
        return time.perf_counter()

    torch.manual_seed(0)
    base = Stack(spec["layers"], {k: tuple(v) for k, v in spec["shapes"].items()}, dev)
    pm = None
    for a in spec["adapters"]:
        cfg = LoraConfig(r=a["r"], lora_alpha=a["alpha"], target_modules=list(spec["shapes"]), init_lora_weights=False)
        if pm is None:
            pm = get_peft_model(base, cfg, adapter_name=a["name"])
        else:
            pm.add_adapter(a["name"], cfg)
    layers = {n[len(PREFIX) :]: m for n, m in pm.named_modules() if isinstance(m, LoraLayer)}
    t0 = now()
    with torch.no_grad():
        for a in spec["adapters"]:
            for name, m in a["modules"].items():
                layers[name].lora_A[a["name"]].weight.copy_(torch.from_numpy(load(d, m["A"])))
                layers[name].lora_B[a["name"]].weight.copy_(torch.from_numpy(load(d, m["B"])))
    out = {"load_s": now() - t0, "rss_after_load_mb": peak_rss_mb(), "merge_s": {}, "threads": torch.get_num_threads()}
    names = [a["name"] for a in spec["adapters"]]
    for c in spec["combinations"]:
        kwargs = {"density": spec.get("density")} if c not in ("cat", "linear", "svd") else {}
        t0 = now()
        with torch.no_grad():
            pm.add_weighted_adapter(names, spec["weights"], f"m_{c}", combination_type=c, **kwargs)
        out["merge_s"][c] = now() - t0
        pm.delete_adapter(f"m_{c}")
    spectra_names = [n for n in layers if int(n.split(".")[2]) < spec["spectra_layers"]]
    t0 = now()
    with torch.no_grad():
        for n in spectra_names:
            torch.linalg.svdvals(layers[n].get_delta_weight(names[0]))
    out["spectra_s"] = now() - t0
    out["spectra_modules"] = len(spectra_names)
    # Rank reduction of the same modules: randomized SVD of the dense delta, re-factored balanced.
    k = spec["reduce_rank"]
    t0 = now()
    with torch.no_grad():
        for n in spectra_names:
            u, sv, v = torch.svd_lowrank(layers[n].get_delta_weight(names[0]), q=k + 10, niter=4)
            root = sv[:k].sqrt()
            _b, _a = u[:, :k] * root, (v[:, :k] * root).T.contiguous()
    out["reduce_s"] = now() - t0
    out["peak_rss_mb"] = peak_rss_mb()
    if gpu:
        out["device"] = torch.cuda.get_device_name(0)
        out["peak_device_mb"] = torch.cuda.max_memory_allocated() / 2**20
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1])
