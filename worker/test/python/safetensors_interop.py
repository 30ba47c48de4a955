"""Interop with the reference safetensors / PEFT stack, driven by worker/test/safetensors.test.ts.

  load FILE       safetensors.torch.load_file + safe_open(...).metadata() -> JSON on stdout
  load-peft DIR   PEFT's load_peft_weights(DIR) (reads DIR/adapter_model.safetensors) -> JSON
  save FILE [--writable]
                  save_file of fixed tensors (f16/bf16 edge values, int8, f64, ...) with
                  metadata {"format": "pt"}, then the same JSON as `load` for what was saved;
                  --writable keeps only the dtypes our writer takes (F32, F16, BF16, I8)

The JSON gives each tensor's dtype, shape and raw little-endian bytes (base64), plus torch's
own conversions (as_f32 for F16/BF16; as_f16/as_bf16 for F32) so the caller can compare
its conversions with torch's bit for bit.
"""

import base64
import json
import sys

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

NAMES = {
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.float64: "F64",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.int16: "I16",
    torch.int32: "I32",
    torch.int64: "I64",
    torch.bool: "BOOL",
}


def raw(t: torch.Tensor) -> str:
    return base64.b64encode(t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()).decode()


def describe(tensors: dict, metadata) -> dict:
    out = {}
    for name, t in tensors.items():
        d = {"dtype": NAMES[t.dtype], "shape": list(t.shape), "bytes": raw(t)}
        if t.dtype in (torch.float16, torch.bfloat16):
            d["as_f32"] = raw(t.float())
        if t.dtype == torch.float32:
            d["as_f16"] = raw(t.to(torch.float16))
            d["as_bf16"] = raw(t.to(torch.bfloat16))
        out[name] = d
    return {"metadata": metadata, "tensors": out}


def from_bits(bits: list, dtype: torch.dtype) -> torch.Tensor:
    signed = [b - 0x10000 if b >= 0x8000 else b for b in bits]
    return torch.tensor(signed, dtype=torch.int16).view(dtype)


# Every class of binary16 / bfloat16 value: zeros, subnormals (min, max), min/max normal,
# one, infinities, NaNs (quiet, with payload, negative).
F16_BITS = [0x0000, 0x8000, 0x0001, 0x03FF, 0x8001, 0x0400, 0x7BFF, 0xFBFF, 0x3C00, 0x3555, 0x7C00, 0xFC00, 0x7E00, 0x7C01, 0xFE00]
BF16_BITS = [0x0000, 0x8000, 0x0001, 0x007F, 0x0080, 0x7F7F, 0xFF7F, 0x3F80, 0x3EAB, 0x7F80, 0xFF80, 0x7FC0, 0x7F81, 0xFFC0]


def reference_tensors() -> dict:
    prefix = "base_model.model.model.layers.0.self_attn"
    return {
        f"{prefix}.q_proj.lora_A.weight": torch.arange(24, dtype=torch.float32).reshape(3, 8) / 7 - 1,
        f"{prefix}.q_proj.lora_B.weight": torch.tensor([[1e-45, -0.0], [float("inf"), float("nan")], [3.4e38, -1.5]]),
        f"{prefix}.v_proj.lora_A.weight": from_bits(F16_BITS, torch.float16),
        f"{prefix}.v_proj.lora_B.weight": from_bits(BF16_BITS, torch.bfloat16).reshape(2, 7),
        "quant.weight": torch.tensor([[-128, -1, 0], [1, 64, 127]], dtype=torch.int8),
        "quant.scale": torch.tensor([0.5], dtype=torch.float32),
        "f64": torch.tensor([1 / 3, -2.5], dtype=torch.float64),
        "i64": torch.tensor([-(2**40), 7], dtype=torch.int64),
        "i32": torch.tensor([-5, 2**31 - 1], dtype=torch.int32),
        "u8": torch.tensor([0, 255], dtype=torch.uint8),
        "mask": torch.tensor([True, False, True]),
        "scalar": torch.tensor(2.0),
        "empty": torch.zeros(0, 4),
    }


def main() -> None:
    cmd, path = sys.argv[1], sys.argv[2]
    if cmd == "load":
        tensors = load_file(path)
        with safe_open(path, framework="pt") as f:
            metadata = f.metadata()
        result = describe(tensors, metadata)
    elif cmd == "load-peft":
        from peft.utils import load_peft_weights

        result = describe(load_peft_weights(path, device="cpu"), None)
    elif cmd == "save":
        tensors = reference_tensors()
        if "--writable" in sys.argv[3:]:
            tensors = {k: t for k, t in tensors.items() if NAMES[t.dtype] in ("F32", "F16", "BF16", "I8")}
        save_file(tensors, path, metadata={"format": "pt"})
        result = describe(tensors, {"format": "pt"})
    else:
        raise SystemExit(f"unknown command {cmd!r}: use load, load-peft or save")
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
