"""PyTorch + PEFT side of bench/cuda.bench.ts, on the GPU. Prints one JSON line.

  peft_cuda_bench.py layer JSON   forward + backward of the seven LoRA projections of one
                                  Llama layer (bf16 nn.Linear, PEFT LoRA on each), given
                                  output gradients, as lrk_cuda_bench_lora_layer does:
                                  {msPerIter, bytesHeld}
  peft_cuda_bench.py model JSON   full training steps of a random LlamaForCausalLM (bf16)
                                  with PEFT LoRA and torch AdamW: {tokensPerSecond, peakBytes}
"""
import json
import sys

import torch
from peft import LoraConfig, get_peft_model

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def timed(fn, iters):
    fn()
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

    torch.manual_seed(0)
    base = torch.cuda.memory_allocated()
    model = get_peft_model(Layer().to("cuda", torch.bfloat16),
                           LoraConfig(r=a["rank"], lora_alpha=2 * a["rank"], target_modules=TARGETS))
    n = a["tokens"]
    xs = {k: torch.randn(n, i, device="cuda", dtype=torch.bfloat16, requires_grad=True) for k, (i, _) in dims.items()}
    dys = {k: torch.randn(n, o, device="cuda", dtype=torch.bfloat16) for k, (_, o) in dims.items()}
    mods = {k: getattr(model.base_model.model, k) for k in dims}

    def step():
        for k in dims:
            mods[k](xs[k]).backward(dys[k])

    torch.cuda.reset_peak_memory_stats()
    ms = timed(step, a["iters"])
    return {"msPerIter": ms, "bytesHeld": torch.cuda.max_memory_allocated() - base}


def model(a):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=a["vocab"], hidden_size=a["hidden"], intermediate_size=a["intermediate"],
                      num_hidden_layers=a["layers"], num_attention_heads=a["heads"], num_key_value_heads=a["kvHeads"],
                      max_position_embeddings=max(2048, a["seq"]), tie_word_embeddings=True)
    m = LlamaForCausalLM(cfg).to("cuda", torch.bfloat16)
    m = get_peft_model(m, LoraConfig(r=a["rank"], lora_alpha=2 * a["rank"], target_modules=TARGETS))
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-4)
    ids = torch.randint(0, a["vocab"], (a["rows"], a["seq"]), device="cuda")

    def step():
        m(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    torch.cuda.reset_peak_memory_stats()
    ms = timed(step, a["steps"])
    return {"tokensPerSecond": a["rows"] * a["seq"] / (ms / 1000), "msPerStep": ms,
            "peakBytes": torch.cuda.max_memory_allocated()}


if __name__ == "__main__":
    if not torch.cuda.is_available():
        print(json.dumps({"skipped": "torch.cuda.is_available() is False"}))
        sys.exit(0)
    mode, args = sys.argv[1], json.loads(sys.argv[2])
    out = layer(args) if mode == "layer" else model(args)
    out["device"] = torch.cuda.get_device_name(0)
    out["torch"] = torch.__version__
    print(json.dumps(out))
