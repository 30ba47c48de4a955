"""PEFT references for the data-driven inits of the training engine (METHODS §1.5, §1.6).

  inits_ref.py loraga DIR   DIR/loraga.json {"base", "targets", "r", "alpha", "batches": [{"tokens", "labels"}],
      "cases": [{"id", "direction", "scale", "gamma"}]}: the gradients PEFT's preprocess_loraga estimates
      over the batches (per target module), then per case PEFT's lora_ga_init from those gradients with
      torch.svd_lowrank replaced by the exact SVD under our sign rule (METHODS §0.1: the largest-magnitude
      entry of each u_i positive, lowest index on ties): lora_A, lora_B and the residual base weight.
"""
import copy
import json
import sys

import torch
from f32io import read_json, save, write_json
from peft import LoraConfig, get_peft_model
from peft.tuners.lora.config import LoraGAConfig
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


if __name__ == "__main__":
    {"loraga": loraga}[sys.argv[1]](*sys.argv[2:])
