"""PEFT-trained adapters through the platform and back into PEFT.

  peft_interop.py train DIR
      DIR/base: a tiny random Llama; DIR/a and DIR/b: LoRA adapters (r=4 on q/v and r=8
      rsLoRA on q/k/v/o) each trained by PEFT for 20 AdamW steps on its own synthetic
      token task. Prints the loss before and after training.
  peft_interop.py logits DIR ADAPTER
      logits of DIR/base + ADAPTER on fixed token ids; prints {"logits": [...]}.
  peft_interop.py weighted DIR W_A W_B
      PEFT's own add_weighted_adapter(cat) of a and b with these weights; prints its logits.
"""
import json
import os
import sys

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

IDS = torch.tensor([[1, 5, 9, 13, 17, 21, 25, 29], [2, 4, 8, 16, 32, 3, 6, 12]])


def base(d):
    return LlamaForCausalLM.from_pretrained(os.path.join(d, "base"))


def train_one(d, name, config, offset):
    torch.manual_seed(10 + offset)
    model = get_peft_model(base(d), config)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    # A task: predict (token + offset) mod 64.
    x = torch.randint(0, 64, (16, 12))
    y = (x + offset) % 64
    losses = []
    for _ in range(20):
        out = model(input_ids=x, labels=None)
        loss = torch.nn.functional.cross_entropy(out.logits.reshape(-1, 64), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    model.save_pretrained(os.path.join(d, name))
    return losses[0], losses[-1]


def train(d):
    torch.manual_seed(1)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32)
    LlamaForCausalLM(cfg).save_pretrained(os.path.join(d, "base"))
    a = train_one(d, "a", LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]), 1)
    b = train_one(d, "b", LoraConfig(r=8, lora_alpha=16, use_rslora=True, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]), 2)
    print(json.dumps({"a": a, "b": b}))


@torch.no_grad()
def logits(d, adapter):
    model = PeftModel.from_pretrained(base(d), adapter).eval()
    print(json.dumps({"logits": model(input_ids=IDS).logits.flatten().tolist()}))


@torch.no_grad()
def weighted(d, wa, wb):
    model = PeftModel.from_pretrained(base(d), os.path.join(d, "a"), adapter_name="a")
    model.load_adapter(os.path.join(d, "b"), adapter_name="b")
    model.add_weighted_adapter(["a", "b"], [float(wa), float(wb)], "ab", combination_type="cat")
    model.set_adapter("ab")
    print(json.dumps({"logits": model.eval()(input_ids=IDS).logits.flatten().tolist()}))


if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    {"train": train, "logits": logits, "weighted": weighted}[cmd](*args)
