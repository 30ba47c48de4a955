"""The PyTorch + transformers + PEFT reference for the native training engine.

  train_ref.py make DIR      reads DIR/spec.json {"models": [...]}; for each model writes
      DIR/<id>/base (save_pretrained of a random *ForCausalLM with tiny dims, f32 or bf16,
      optionally sharded) and DIR/<id>/adapter (PEFT LoRA with init_lora_weights=False, so B != 0).
  train_ref.py run DIR       reads DIR/cases.json {"cases": [...]}; per case loads base +
      adapter in fp32 and writes DIR/<case id>.out.json: the logits and loss of one batch, the
      LoRA gradients of its mean loss (one backward), and, when the case has "train", the
      per-step losses and final factors of N AdamW steps with clipping, gradient
      accumulation (loss = Σ / num_items_in_batch over the step, as transformers' Trainer)
      and a warmup + cosine/linear/constant schedule; with "generate", the greedy continuation
      (generate(do_sample=False), KV cache) of its prompts.
  train_ref.py dropout DIR       one batch and AdamW steps with our LoRA dropout masks injected
      into PEFT's lora_dropout modules (DIR/dropout.json).
  train_ref.py pissa DIR         PEFT's PiSSA init (A, B, residual W) on one of the models.
  train_ref.py peft-logits DIR   logits of PeftModel.from_pretrained on an adapter we wrote
      (DIR/export.json names base, adapter dir and tokens).
"""
import json
import os
import sys

import torch
from f32io import load, read_json, save, write_json
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import (AutoModelForCausalLM, LlamaConfig, MistralConfig, Qwen2Config,
                          get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup,
                          get_linear_schedule_with_warmup)

CONFIGS = {"llama": LlamaConfig, "mistral": MistralConfig, "qwen2": Qwen2Config}


def make(d):
    spec = read_json(d, "spec.json")
    for m in spec["models"]:
        torch.manual_seed(m["seed"])
        cfg = CONFIGS[m["family"]](**m["config"])
        model = AutoModelForCausalLM.from_config(cfg)
        # Random norms (not all ones) so RMSNorm weights are exercised.
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "norm" in name:
                    p.uniform_(0.5, 1.5)
                elif name.endswith("bias"):
                    p.normal_(0, 0.1)
        dtype = torch.bfloat16 if m.get("dtype") == "bf16" else torch.float32
        base = os.path.join(d, m["id"], "base")
        model.to(dtype).save_pretrained(base, max_shard_size=m.get("max_shard_size", "50GB"))
        a = m["adapter"]
        lcfg = LoraConfig(r=a["r"], lora_alpha=a["alpha"], target_modules=a["targets"], use_rslora=a.get("use_rslora", False),
                          use_dora=a.get("use_dora", False), lora_dropout=0.0, init_lora_weights=False)
        peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), lcfg)
        with torch.no_grad():  # PEFT's non-default init draws B small; make the adapter matter.
            for name, p in peft_model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.2)
                elif "lora_magnitude_vector" in name:  # m != ||W + sBA||, so m/n != 1
                    p.mul_(torch.empty_like(p).uniform_(0.7, 1.3))
        peft_model.save_pretrained(os.path.join(d, m["id"], "adapter"))
    print(json.dumps({"ok": True}))


def lora_params(model):
    """(module path, 'A' | 'B' | 'M' (DoRA magnitude), parameter) in a fixed order."""
    out = []
    for name, p in model.named_parameters():
        for key, which in ((".lora_A.", "A"), (".lora_B.", "B"), (".lora_magnitude_vector.", "M")):
            if key in name:
                out.append((name.split(".lora_")[0].removeprefix("base_model.model."), which, p))
    return out


def schedule(opt, o):
    kind, warm, total = o.get("schedule", "constant"), o.get("warmupSteps", 0), o.get("totalSteps", 0)
    if kind == "cosine":
        return get_cosine_schedule_with_warmup(opt, warm, total)
    if kind == "linear":
        return get_linear_schedule_with_warmup(opt, warm, total)
    return get_constant_schedule_with_warmup(opt, warm)


def run_case(d, c):
    base = AutoModelForCausalLM.from_pretrained(os.path.join(d, c["model"], "base"), dtype=torch.float32)
    model = PeftModel.from_pretrained(base, os.path.join(d, c["model"], "adapter"), is_trainable=True)
    model.train()
    tokens, labels = torch.tensor(c["tokens"]), torch.tensor(c["labels"])
    out = model(input_ids=tokens, labels=labels)
    out.loss.backward()
    res = {"loss": float(out.loss), "logits": save(d, c["id"] + ".logits", out.logits.detach()), "grads": {}}
    for path, which, p in lora_params(model):
        res["grads"].setdefault(path, {})[which] = save(d, f"{c['id']}.grad.{path}.{which}", p.grad)
    g = c.get("generate")
    if g:
        model.eval()
        with torch.no_grad():
            prompt = torch.tensor(g["prompt"])
            mask = torch.ones_like(prompt)
            for row, pad in enumerate(g.get("leftPad", [])):
                mask[row, :pad] = 0  # left padding, as a tokenizer with padding_side="left" makes
            gen = model.generate(input_ids=prompt, attention_mask=mask, max_new_tokens=g["maxNewTokens"], do_sample=False)
        res["generated"] = gen[:, prompt.shape[1]:].tolist()
        model.train()
    t = c.get("train")
    if t:
        model.zero_grad(set_to_none=True)
        o = t["optimizer"]
        params = [p for _, _, p in lora_params(model)]
        opt = torch.optim.AdamW(params, lr=o["lr"], betas=(o.get("beta1", 0.9), o.get("beta2", 0.999)), eps=o.get("eps", 1e-8),
                                weight_decay=o.get("weightDecay", 0.0))
        sched = schedule(opt, o)
        losses, norms, lrs = [], [], []
        for step in t["steps"]:
            total = sum(int((torch.tensor(mb["labels"])[:, 1:] != -100).sum()) for mb in step)
            loss_sum = 0.0
            for mb in step:
                loss = model(input_ids=torch.tensor(mb["tokens"]), labels=torch.tensor(mb["labels"]), num_items_in_batch=total).loss
                loss.backward()
                loss_sum += float(loss)
            max_norm = o.get("maxGradNorm", 0)
            norm = torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm > 0 else float("inf"))
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss_sum)
            norms.append(float(norm))
        res["train"] = {"losses": losses, "gradNorms": norms, "lrs": lrs, "params": {}}
        for path, which, p in lora_params(model):
            res["train"]["params"].setdefault(path, {})[which] = save(d, f"{c['id']}.param.{path}.{which}", p.detach())
    write_json(d, c["id"] + ".out.json", res)


def peft_logits(d):
    """DIR/export.json {"base", "adapter", "tokens"}: logits of PeftModel.from_pretrained(base, adapter)."""
    spec = read_json(d, "export.json")
    base = AutoModelForCausalLM.from_pretrained(spec["base"], dtype=torch.float32)
    model = PeftModel.from_pretrained(base, spec["adapter"]).eval()
    with torch.no_grad():
        logits = model(input_ids=torch.tensor(spec["tokens"])).logits
    write_json(d, "export.out.json", {"logits": save(d, "export.logits", logits)})
    print(json.dumps({"ok": True}))


class InjectedDropout(torch.nn.Module):
    """Stands in for a LoRA layer's lora_dropout: multiplies by the mask the test injected
    (ours, already scaled by 1/(1-p)) for the current (step, micro-batch)."""

    def __init__(self, path, masks):
        super().__init__()
        self.path, self.masks = path, masks

    def forward(self, x):
        return x * self.masks["current"][self.path].view_as(x)


def dropout(d):
    """DIR/dropout.json: like one case of run, with our dropout masks injected into every
    LoRA layer: the forward/backward of one batch, then AdamW steps over micro-batches."""
    from peft.tuners.lora import LoraLayer
    c = read_json(d, "dropout.json")
    base = AutoModelForCausalLM.from_pretrained(os.path.join(d, c["model"], "base"), dtype=torch.float32)
    model = PeftModel.from_pretrained(base, os.path.join(d, c["model"], "adapter"), is_trainable=True)
    model.train()
    masks = {}
    for name, mod in model.named_modules():
        if isinstance(mod, LoraLayer):
            mod.lora_dropout["default"] = InjectedDropout(name.removeprefix("base_model.model."), masks)
    as_tensors = lambda entries: {k: torch.from_numpy(load(d, e).copy()) for k, e in entries.items()}
    masks["current"] = as_tensors(c["masks"]["forward"])
    out = model(input_ids=torch.tensor(c["tokens"]), labels=torch.tensor(c["labels"]))
    out.loss.backward()
    res = {"loss": float(out.loss), "logits": save(d, "dropout.logits", out.logits.detach()), "grads": {}}
    for path, which, p in lora_params(model):
        res["grads"].setdefault(path, {})[which] = save(d, f"dropout.grad.{path}.{which}", p.grad)
    model.zero_grad(set_to_none=True)
    o = c["optimizer"]
    params = [p for _, _, p in lora_params(model)]
    opt = torch.optim.AdamW(params, lr=o["lr"], weight_decay=o.get("weightDecay", 0.0))
    losses = []
    for s, step in enumerate(c["steps"]):
        total = sum(int((torch.tensor(mb["labels"])[:, 1:] != -100).sum()) for mb in step)
        loss_sum = 0.0
        for k, mb in enumerate(step):
            masks["current"] = as_tensors(c["masks"]["steps"][s][k])
            loss = model(input_ids=torch.tensor(mb["tokens"]), labels=torch.tensor(mb["labels"]), num_items_in_batch=total).loss
            loss.backward()
            loss_sum += float(loss)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss_sum)
    res["train"] = {"losses": losses, "params": {}}
    for path, which, p in lora_params(model):
        res["train"]["params"].setdefault(path, {})[which] = save(d, f"dropout.param.{path}.{which}", p.detach())
    write_json(d, "dropout.out.json", res)
    print(json.dumps({"ok": True}))


def pissa(d):
    """DIR/pissa.json {"model" | "base", "r", "alpha", "targets", "tokens"}: PEFT's init_lora_weights="pissa" on
    the model's base (DIR/<model>/base, or the directory "base"): per module A, B and the residual base weight,
    the fp64 rank-r truncation of W and W minus it ("delta64", "W64"), and the logits before and after."""
    spec = read_json(d, "pissa.json")
    base_dir = spec["base"] if "base" in spec else os.path.join(d, spec["model"], "base")
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    tokens = torch.tensor(spec["tokens"])
    with torch.no_grad():
        before = base(input_ids=tokens).logits
    originals = {name: m.weight.detach().clone() for name, m in base.named_modules() if isinstance(m, torch.nn.Linear)}
    model = get_peft_model(base, LoraConfig(r=spec["r"], lora_alpha=spec["alpha"], target_modules=spec["targets"],
                                            init_lora_weights="pissa", lora_dropout=0.0))
    with torch.no_grad():
        after = model(input_ids=tokens).logits
    res = {"modules": {}, "logitsBefore": save(d, "pissa.before", before), "logitsAfter": save(d, "pissa.after", after)}
    for name, mod in model.named_modules():
        if hasattr(mod, "lora_A") and "default" in mod.lora_A:
            path = name.removeprefix("base_model.model.")
            # fp64 settles disagreements (METHODS §8.1): the rank-r truncation of the original W in double.
            w = (mod.base_layer.weight.detach().double() +
                 mod.scaling["default"] * mod.lora_B["default"].weight.detach().double() @ mod.lora_A["default"].weight.detach().double())
            orig = originals[path].double()
            U, S, Vh = torch.linalg.svd(orig, full_matrices=False)
            low = (U[:, :spec["r"]] * S[:spec["r"]]) @ Vh[:spec["r"]]
            res["modules"][path] = {
                "A": save(d, f"pissa.{path}.A", mod.lora_A["default"].weight.detach()),
                "B": save(d, f"pissa.{path}.B", mod.lora_B["default"].weight.detach()),
                "W": save(d, f"pissa.{path}.W", mod.base_layer.weight.detach()),
                "delta64": save(d, f"pissa.{path}.delta64", low.float()),
                "W64": save(d, f"pissa.{path}.W64", (orig - low).float()),
            }
            assert torch.allclose(w, orig, atol=1e-5), path
    write_json(d, "pissa.out.json", res)
    print(json.dumps({"ok": True}))


def run(d):
    torch.set_num_threads(1)
    for c in read_json(d, "cases.json")["cases"]:
        run_case(d, c)
    print(json.dumps({"ok": True}))


if __name__ == "__main__":
    {"make": make, "run": run, "peft-logits": peft_logits, "dropout": dropout, "pissa": pissa}[sys.argv[1]](*sys.argv[2:])
