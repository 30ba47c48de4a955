"""PyTorch + PEFT side of bench/train.bench.ts, and the maker of its random model.

  peft_train_bench.py make DIR CONFIG_JSON   saves a randomly initialised LlamaForCausalLM
                                             (fp32) of that config to DIR (save_pretrained).
  peft_train_bench.py run DIR                reads DIR/bench.json (model dir, LoRA config,
                                             token batches, optimizer, threads), trains with
                                             PEFT LoRA + torch AdamW exactly as the native side
                                             does, and prints one JSON object: seconds per
                                             timed step, tokens/s, losses and peak RSS.
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


def run(d):
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
    times, losses = [], []
    for step in range(spec["warmup"] + spec["steps"]):
        t0 = time.perf_counter()
        loss = model(input_ids=tokens, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, o.get("maxGradNorm", 1.0))
        opt.step()
        opt.zero_grad(set_to_none=True)
        dt = time.perf_counter() - t0
        losses.append(float(loss))
        if step >= spec["warmup"]:
            times.append(dt)
    per_step = sorted(times)[len(times) // 2]
    print(json.dumps({"secondsPerStep": per_step, "tokensPerSecond": tokens.numel() / per_step, "losses": losses,
                      "peakRssMb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "torch": torch.__version__, "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    {"make": make, "run": run}[sys.argv[1]](*sys.argv[2:])
