"""PyTorch + PEFT side of bench/cuda.bench.ts, on the GPU. Prints one JSON line.

  peft_cuda_bench.py layer JSON   forward + backward of the seven LoRA projections of one
                                  Llama layer (bf16 nn.Linear, PEFT LoRA on each), given
                                  output gradients, as lrk_cuda_bench_lora_layer does:
                                  {msPerIter, bytesHeld}
  peft_cuda_bench.py save JSON    writes a random LlamaForCausalLM (bf16, seed 0) to
                                  JSON's dir (config.json + model.safetensors): the model
                                  both sides train
  peft_cuda_bench.py model JSON   full training steps of the model in JSON's dir (bf16) with
                                  PEFT LoRA and torch AdamW: {tokensPerSecond, peakBytes}

JSON's "device" (default "cuda"): "cpu" for a dry run of the script without a GPU
(wall-clock times, no memory figures).
"""
import json
import sys

import torch
from peft import LoraConfig, get_peft_model

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def timed(fn, iters, device="cuda"):
    fn()
    if device == "cpu":
        import time
        t = time.perf_counter()
        for _ in range(iters):
            fn()
        return (time.perf_counter() - t) * 1000 / iters
    torch.cuda.synchronize()
    t0, t1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    t0.record()
    for _ in range(iters):
        fn()
    t1.record()
    torch.cuda.synchronize()
    return t0.elapsed_time(t1) / iters


def layer(a):
    dims = {  # {in, out} as the native benchmark
        "q_proj": (a["hidden"], a["qDim"]), "k_proj": (a["hidden"], a["kvDim"]), "v_proj": (a["hidden"], a["kvDim"]),
        "o_proj": (a["qDim"], a["hidden"]), "gate_proj": (a["hidden"], a["intermediate"]),
        "up_proj": (a["hidden"], a["intermediate"]), "down_proj": (a["intermediate"], a["hidden"]),
    }

    class Layer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            for name, (i, o) in dims.items():
                setattr(self, name, torch.nn.Linear(i, o, bias=False))

    dev = a.get("device", "cuda")
    gpu = dev != "cpu"
    torch.manual_seed(0)
    base = torch.cuda.memory_allocated() if gpu else 0
    model = get_peft_model(Layer().to(dev, torch.bfloat16),
                           LoraConfig(r=a["rank"], lora_alpha=2 * a["rank"], target_modules=TARGETS))
    n = a["tokens"]
    xs = {k: torch.randn(n, i, device=dev, dtype=torch.bfloat16, requires_grad=True) for k, (i, _) in dims.items()}
    dys = {k: torch.randn(n, o, device=dev, dtype=torch.bfloat16) for k, (_, o) in dims.items()}
    mods = {k: getattr(model.base_model.model, k) for k in dims}

    def step():
        for k in dims:
            mods[k](xs[k]).backward(dys[k])

    if gpu:
        torch.cuda.reset_peak_memory_stats()
    ms = timed(step, a["iters"], dev)
    return {"msPerIter": ms, "bytesHeld": torch.cuda.max_memory_allocated() - base if gpu else 0}


def save(a):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=a["vocab"], hidden_size=a["hidden"], intermediate_size=a["intermediate"],
                      num_hidden_layers=a["layers"], num_attention_heads=a["heads"], num_key_value_heads=a["kvHeads"],
                      head_dim=a["headDim"], max_position_embeddings=max(2048, a["seq"]), tie_word_embeddings=True)
    LlamaForCausalLM(cfg).to(torch.bfloat16).save_pretrained(a["dir"], safe_serialization=True)
    return {"saved": a["dir"]}


def model(a):
    from transformers import LlamaForCausalLM

    dev = a.get("device", "cuda")
    torch.manual_seed(0)
    m = LlamaForCausalLM.from_pretrained(a["dir"], dtype=torch.bfloat16).to(dev)
    m = get_peft_model(m, LoraConfig(r=a["rank"], lora_alpha=2 * a["rank"], target_modules=TARGETS))
    m.train()
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-4)
    ids = torch.randint(0, m.config.vocab_size, (a["rows"], a["seq"]), device=dev)

    def step():
        m(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    if dev != "cpu":
        torch.cuda.reset_peak_memory_stats()
    ms = timed(step, a["steps"], dev)
    return {"tokensPerSecond": a["rows"] * a["seq"] / (ms / 1000), "msPerStep": ms,
            "peakBytes": torch.cuda.max_memory_allocated() if dev != "cpu" else 0}


if __name__ == "__main__":
    mode, args = sys.argv[1], json.loads(sys.argv[2])
    if args.get("device", "cuda") == "cuda" and mode != "save" and not torch.cuda.is_available():
        print(json.dumps({"skipped": "torch.cuda.is_available() is False"}))
        sys.exit(0)
    out = {"layer": layer, "save": save, "model": model}[mode](args)
    out["device"] = torch.cuda.get_device_name(0) if args.get("device", "cuda") == "cuda" else "cpu"
    out["torch"] = torch.__version__
    print(json.dumps(out))
