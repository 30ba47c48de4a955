"""Hugging Face clients against the registry.

  hf_pull.py make <dir>
      writes <dir>/base (a tiny random Llama, Hugging Face layout) and <dir>/adapter (a
      PEFT LoRA adapter for it with non-zero B), deterministically.
  hf_pull.py pull <dir> <endpoint> <token> <repo_id> <revision>
      snapshot_download()s the revision and compares every file with <dir>/adapter, then
      PeftModel.from_pretrained(base, repo_id, revision=...) through HF_ENDPOINT and
      compares its logits with the adapter loaded from disk. Prints one JSON line.
"""
import json
import os
import sys


def make(d):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    base = LlamaForCausalLM(cfg)
    base.save_pretrained(os.path.join(d, "base"))
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    model = get_peft_model(base, lora)
    model.save_pretrained(os.path.join(d, "adapter"))
    print(json.dumps({"files": sorted(os.listdir(os.path.join(d, "adapter")))}))


def pull(d, endpoint, token, repo_id, revision):
    os.environ["HF_ENDPOINT"] = endpoint  # read by huggingface_hub at import
    os.environ["HF_TOKEN"] = token
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    os.environ["HF_HOME"] = os.path.join(d, "hf-home")
    import torch
    from huggingface_hub import snapshot_download
    from peft import PeftModel
    from transformers import LlamaForCausalLM

    snap = snapshot_download(repo_id, revision=revision, endpoint=endpoint, token=token, cache_dir=os.path.join(d, "cache"))
    local = os.path.join(d, "adapter")
    same = {}
    for name in sorted(os.listdir(local)):
        with open(os.path.join(local, name), "rb") as a, open(os.path.join(snap, name), "rb") as b:
            same[name] = a.read() == b.read()
    x = torch.arange(16).reshape(2, 8) % 128
    base = LlamaForCausalLM.from_pretrained(os.path.join(d, "base"))
    remote = PeftModel.from_pretrained(base, repo_id, revision=revision).eval()
    with torch.no_grad():
        got = remote(x).logits
    base2 = LlamaForCausalLM.from_pretrained(os.path.join(d, "base"))
    ref = PeftModel.from_pretrained(base2, local).eval()
    plain = LlamaForCausalLM.from_pretrained(os.path.join(d, "base")).eval()
    with torch.no_grad():
        want = ref(x).logits
        without = plain(x).logits
    print(json.dumps({
        "snapshot_files": sorted(os.listdir(snap)),
        "same_bytes": same,
        "max_abs_diff": float((got - want).abs().max()),
        "adapter_changes_output": float((want - without).abs().max()) > 1e-4,
    }))


if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    {"make": make, "pull": pull}[cmd](*args)
