"""PEFT directories written by our core, loaded back by PEFT.

  peft_roundtrip.py make DIR
      DIR/base: a tiny random Llama; DIR/a: LoRA r=4, alpha=8 on q/v; DIR/b: rsLoRA r=8,
      alpha=16 on q/k/o of layer 0 only (different ranks, targets and scaling rules).
  peft_roundtrip.py merged-base DIR ADAPTER OUT      PEFT merge_and_unload, saved to OUT
  peft_roundtrip.py compare-models A B               max relative difference of two model dirs
  peft_roundtrip.py check DIR OUT W_A W_B RANK
      loads DIR/base + OUT with PeftModel.from_pretrained and compares every module's
      get_delta_weight with W_A*delta_a + W_B*delta_b from PEFT's own loads of a and b
      (RANK = 0), or with its truncated SVD at RANK. Prints {"max_rel": ..., "modules": n}.
"""
import json
import os
import sys

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM


def base(d):
    return LlamaForCausalLM.from_pretrained(os.path.join(d, "base"))


def make(d):
    torch.manual_seed(1)
    cfg = LlamaConfig(vocab_size=64, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32)
    LlamaForCausalLM(cfg).save_pretrained(os.path.join(d, "base"))
    get_peft_model(base(d), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)).save_pretrained(os.path.join(d, "a"))
    get_peft_model(base(d), LoraConfig(r=8, lora_alpha=16, use_rslora=True, target_modules=["q_proj", "k_proj", "o_proj"],
                                       layers_to_transform=[0], init_lora_weights=False)).save_pretrained(os.path.join(d, "b"))
    print(json.dumps({"ok": True}))


def deltas(model):
    out = {}
    for name, mod in model.base_model.model.named_modules():
        if hasattr(mod, "get_delta_weight") and "default" in getattr(mod, "lora_A", {}):
            out[name] = mod.get_delta_weight("default").detach().double()
    return out


def check(d, out_dir, wa, wb, rank):
    wa, wb, rank = float(wa), float(wb), int(rank)
    da = deltas(PeftModel.from_pretrained(base(d), os.path.join(d, "a")))
    db = deltas(PeftModel.from_pretrained(base(d), os.path.join(d, "b")))
    got = deltas(PeftModel.from_pretrained(base(d), out_dir))
    names = sorted(set(da) | set(db))
    assert sorted(got) == names, (sorted(got), names)
    worst = 0.0
    for n in names:
        want = wa * da.get(n, 0) + wb * db.get(n, 0)
        if rank:
            u, s, vh = torch.linalg.svd(want, full_matrices=False)
            want = u[:, :rank] @ torch.diag(s[:rank]) @ vh[:rank]
        worst = max(worst, float((got[n] - want).norm() / want.norm()))
    print(json.dumps({"max_rel": worst, "modules": len(names)}))




def merged_base(d, adapter, out):
    """PEFT's merge_and_unload of DIR/<adapter> into DIR/base, saved to OUT (safetensors)."""
    model = PeftModel.from_pretrained(base(d), os.path.join(d, adapter)).merge_and_unload()
    model.save_pretrained(out, safe_serialization=True)
    print(json.dumps({"ok": True}))


def compare_models(a, b):
    """Largest relative Frobenius difference over all tensors of two model directories."""
    from safetensors.torch import load_file
    x, y = load_file(os.path.join(a, "model.safetensors")), load_file(os.path.join(b, "model.safetensors"))
    keys = sorted(set(x) & set(y))
    worst = max(float((x[k].double() - y[k].double()).norm() / max(y[k].double().norm(), 1e-30)) for k in keys)
    print(json.dumps({"max_rel": worst, "common": len(keys), "only_a": sorted(set(x) - set(y)), "only_b": sorted(set(y) - set(x))}))


if __name__ == "__main__":
    {"make": make, "check": check, "merged-base": merged_base, "compare-models": compare_models}[sys.argv[1]](*sys.argv[2:])
