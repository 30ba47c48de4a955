"""PyTorch + PEFT side of bench/train.bench.ts, and the maker of its random model.

  peft_train_bench.py make DIR CONFIG_JSON   saves a randomly initialised LlamaForCausalLM
                                             (fp32) of that config to DIR (save_pretrained).
  peft_train_bench.py serve DIR              reads DIR/bench.json (model dir, LoRA config,
                                             token batch, optimizer, threads), sets up PEFT LoRA
                                             + torch AdamW as the native side does, then runs one
                                             training step per 'step' line on stdin (see serve).
"""
import json
import os
import resource
import sys
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, LlamaConfig


def make(d, config_json):
    torch.manual_seed(0)
    LlamaForCausalLM = __import__("transformers").LlamaForCausalLM
    LlamaForCausalLM(LlamaConfig(**json.loads(config_json))).save_pretrained(d)
    print(json.dumps({"ok": True}))


def serve(d):
    """Line protocol on stdin/stdout, so the caller can interleave our steps with its own
    under the same machine load: 'step' runs one training step and answers
    {"seconds", "cpuSeconds", "loss"}; 'quit' answers {"peakRssMb", "torch", "threads"}."""
    with open(os.path.join(d, "bench.json")) as f:
        spec = json.load(f)
    torch.set_num_threads(spec["threads"])
    model = AutoModelForCausalLM.from_pretrained(spec["model"], dtype=torch.float32)
    lora = spec["lora"]
    model = get_peft_model(model, LoraConfig(r=lora["r"], lora_alpha=lora["alpha"], target_modules=lora["targets"],
                                             lora_dropout=0.0))
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    o = spec["optimizer"]
    opt = torch.optim.AdamW(params, lr=o["lr"], weight_decay=o.get("weightDecay", 0.0))
    tokens, labels = torch.tensor(spec["tokens"]), torch.tensor(spec["labels"])
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        if line.strip() == "quit":
            break
        t0, c0 = time.perf_counter(), time.process_time()
        loss = model(input_ids=tokens, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, o.get("maxGradNorm", 1.0))
        opt.step()
        opt.zero_grad(set_to_none=True)
        print(json.dumps({"seconds": time.perf_counter() - t0, "cpuSeconds": time.process_time() - c0, "loss": float(loss)}),
              flush=True)
    print(json.dumps({"peakRssMb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "torch": torch.__version__,
                      "threads": torch.get_num_threads()}), flush=True)


if __name__ == "__main__":
    {"make": make, "serve": serve}[sys.argv[1]](*sys.argv[2:])
