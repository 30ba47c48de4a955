"""PEFT references for the data-driven inits of the training engine (METHODS §1.5, §1.6).

  inits_ref.py loraga DIR   DIR/loraga.json {"base", "targets", "r", "alpha", "batches": [{"tokens", "labels"}],
      "cases": [{"id", "direction", "scale", "gamma"}]}: the gradients PEFT's preprocess_loraga estimates
      over the batches (per target module), then per case PEFT's lora_ga_init from those gradients with
      torch.svd_lowrank replaced by the exact SVD under our sign rule (METHODS §0.1: the largest-magnitude
      entry of each u_i positive, lowest index on ties): lora_A, lora_B and the residual base weight.
  inits_ref.py eva DIR      DIR/eva.json {"base", "targets", "r", "alpha", "eva": {rho, tau, whiten,
      adjust_scaling_factors, use_label_mask}, "batches": [{"input_ids", "attention_mask", "labels"}]}: PEFT's
      initialize_lora_eva_weights over those batches with the IPCA's svd_lowrank replaced by the exact SVD
      (IncrementalPCA(lowrank=False) semantics): per module lora_A, and the config's rank_pattern,
      alpha_pattern and target_modules.
  inits_ref.py lorasb DIR   DIR/lorasb.json {"base", "modules": {path: {"A", "B", "R", "mask"?}}, "scale", "tokens", "labels",
      "dW": {path: entry}, "r"}: a PyTorch replica of LoRA-SB (y = base(x) + s·B(R(Ax)), only R requires grad): loss,
      logits and autograd's dL/dR per module, and the same in fp64 ("loss64", "logits64", "gradR64": fp64 settles
      disagreements, METHODS §8.1); and [ref]'s init from the injected update estimates with the exact SVD
      (dW^T = U diag(S) V^T: B = V, R = diag(S), A = U^T): B R A and S per module.
"""
import copy
import json
import signal
import sys

import torch
from f32io import load, read_json, save, write_json
from peft import LoraConfig, get_peft_model
from peft.tuners.lora.config import EvaConfig, LoraGAConfig
from peft.tuners.lora.eva import initialize_lora_eva_weights
from peft.utils.incremental_pca import IncrementalPCA
from peft.tuners.lora.loraga import preprocess_loraga
from transformers import AutoModelForCausalLM


def exact_svd_lowrank(M, q=6, niter=2, M_=None):
    """torch.svd_lowrank's signature, the exact thin SVD's first q triplets, sign rule §0.1."""
    U, S, Vh = torch.linalg.svd(M.double(), full_matrices=False)
    idx = U.abs().argmax(dim=0)
    sign = torch.sign(U[idx, torch.arange(U.shape[1])])
    sign[sign == 0] = 1
    U = U * sign
    Vh = Vh * sign[:, None]
    return U[:, :q].float(), S[:q].float(), Vh[:q].T.float()


def loraga(d):
    spec = read_json(d, "loraga.json")
    base = AutoModelForCausalLM.from_pretrained(spec["base"], dtype=torch.float32)
    cfg = LoraConfig(r=spec["r"], lora_alpha=spec["alpha"], target_modules=spec["targets"], lora_dropout=0.0,
                     init_lora_weights="lora_ga", lora_ga_config=LoraGAConfig())

    def train_step():
        for b in spec["batches"]:
            out = base(input_ids=torch.tensor(b["tokens"]), labels=torch.tensor(b["labels"]))
            out.loss.backward()

    preprocess_loraga(base, cfg, train_step)
    grads = {name: m._peft_loraga_grad.clone() for name, m in base.named_modules() if hasattr(m, "_peft_loraga_grad")}
    res = {"grads": {name: save(d, f"loraga.G.{name}", g) for name, g in grads.items()}, "cases": {}}
    torch.svd_lowrank = exact_svd_lowrank
    for case in spec["cases"]:
        model = copy.deepcopy(base)
        for name, m in model.named_modules():
            if name in grads:
                m._peft_loraga_grad = grads[name].clone()
        ccfg = LoraConfig(r=spec["r"], lora_alpha=spec["alpha"], target_modules=spec["targets"], lora_dropout=0.0,
                          init_lora_weights="lora_ga",
                          lora_ga_config=LoraGAConfig(direction=case["direction"], scale=case["scale"],
                                                      stable_gamma=case["gamma"]))
        peft_model = get_peft_model(model, ccfg)
        out = {}
        for name, mod in peft_model.named_modules():
            if hasattr(mod, "lora_A") and "default" in mod.lora_A:
                path = name.removeprefix("base_model.model.")
                tag = f"loraga.{case['id']}.{path}"
                out[path] = {
                    "A": save(d, f"{tag}.A", mod.lora_A["default"].weight.detach()),
                    "B": save(d, f"{tag}.B", mod.lora_B["default"].weight.detach()),
                    "W": save(d, f"{tag}.W", mod.base_layer.weight.detach()),
                }
        res["cases"][case["id"]] = out
    write_json(d, "loraga.out.json", res)
    print(json.dumps({"ok": True}))


def eva(d):
    spec = read_json(d, "eva.json")
    signal.alarm(240)  # PEFT cycles the batches until every module converges: fail instead of hanging
    IncrementalPCA._svd_fn_lowrank = IncrementalPCA._svd_fn_full
    base = AutoModelForCausalLM.from_pretrained(spec["base"], dtype=torch.float32)
    cfg = LoraConfig(r=spec["r"], lora_alpha=spec["alpha"], target_modules=spec["targets"], lora_dropout=0.0,
                     init_lora_weights="eva", eva_config=EvaConfig(**spec["eva"]))
    model = get_peft_model(base, cfg)
    batches = [{k: torch.tensor(v) for k, v in b.items()} for b in spec["batches"]]
    initialize_lora_eva_weights(model, batches, show_progress_bar=False)
    pc = model.peft_config["default"]
    res = {"modules": {}, "rank_pattern": pc.rank_pattern, "alpha_pattern": pc.alpha_pattern,
           "target_modules": sorted(pc.target_modules) if not isinstance(pc.target_modules, str) else pc.target_modules}
    for name, mod in model.named_modules():
        if hasattr(mod, "lora_A") and "default" in mod.lora_A:
            path = name.removeprefix("base_model.model.")
            res["modules"][path] = {"A": save(d, f"eva.{path}.A", mod.lora_A["default"].weight.detach())}
    write_json(d, "eva.out.json", res)
    print(json.dumps({"ok": True}))


class LoraSbLinear(torch.nn.Module):
    """base(x) + s·B(R(A·drop(x))), drop(x) = x ⊙ mask with our injected mask (already 1/(1-p)-scaled)."""

    def __init__(self, base, A, B, R, scale, mask=None):
        super().__init__()
        self.base, self.scale = base, scale
        self.register_buffer("A", torch.tensor(A))
        self.register_buffer("B", torch.tensor(B))
        self.R = torch.nn.Parameter(torch.tensor(R))
        self.register_buffer("mask", None if mask is None else torch.tensor(mask))

    def forward(self, x):
        xd = x if self.mask is None else x * self.mask.view(x.shape)
        return self.base(x) + self.scale * torch.nn.functional.linear(
            torch.nn.functional.linear(torch.nn.functional.linear(xd, self.A), self.R), self.B)


def lorasb_replica(d, spec, dtype):
    """The replica in `dtype` (fp32, or fp64 to settle disagreements): loss, logits and dL/dR per module."""
    model = AutoModelForCausalLM.from_pretrained(spec["base"], dtype=torch.float32).to(dtype)
    for p in model.parameters():
        p.requires_grad_(False)
    wrapped = {}
    for path, e in spec["modules"].items():
        parent_path, _, child = path.rpartition(".")
        parent = model.get_submodule(parent_path)
        mask = load(d, e["mask"]) if "mask" in e else None
        w = LoraSbLinear(getattr(parent, child), load(d, e["A"]), load(d, e["B"]), load(d, e["R"]), spec["scale"], mask).to(dtype)
        setattr(parent, child, w)
        wrapped[path] = w
    out = model(input_ids=torch.tensor(spec["tokens"]), labels=torch.tensor(spec["labels"]))
    out.loss.backward()
    return out.loss.item(), out.logits.detach().float(), {path: w.R.grad.float() for path, w in wrapped.items()}


def lorasb(d):
    spec = read_json(d, "lorasb.json")
    loss, logits, grads = lorasb_replica(d, spec, torch.float32)
    loss64, logits64, grads64 = lorasb_replica(d, spec, torch.float64)
    res = {"loss": loss, "logits": save(d, "lorasb.logits", logits), "gradR": {}, "init": {},
           "loss64": loss64, "logits64": save(d, "lorasb.logits64", logits64), "gradR64": {}}
    for path, g in grads.items():
        res["gradR"][path] = save(d, f"lorasb.{path}.gradR", g)
        res["gradR64"][path] = save(d, f"lorasb.{path}.gradR64", grads64[path])
    r = spec["r"]
    for path, e in spec.get("dW", {}).items():
        dW = torch.tensor(load(d, e)).double()
        U, S, Vh = torch.linalg.svd(dW.T, full_matrices=False)
        B, R, A = Vh[:r].T, torch.diag(S[:r]), U[:, :r].T
        res["init"][path] = {"BRA": save(d, f"lorasb.{path}.BRA", (B @ R @ A).float()), "S": save(d, f"lorasb.{path}.S", S[:r].float())}
    write_json(d, "lorasb.out.json", res)
    print(json.dumps({"ok": True}))


if __name__ == "__main__":
    {"loraga": loraga, "eva": eva, "lorasb": lorasb}[sys.argv[1]](*sys.argv[2:])
