"""PEFT's energy cut-off for worker/test/compress.test.ts.

  peft_cutoff_ref.py DIR   reads DIR/cutoff.json {"sigmas": [[...]], "taus": [...]} and writes
                           DIR/cutoff-results.json {"k": [[k per tau] per sigma]} from
                           peft.tuners.lora.conversion._find_cutoff_index (fp32 tensors).
"""

import json
import os
import sys

import torch
from peft.tuners.lora.conversion import _find_cutoff_index


def run(d):
    with open(os.path.join(d, "cutoff.json")) as f:
        spec = json.load(f)
    ks = [[_find_cutoff_index(torch.tensor(s, dtype=torch.float32), t) for t in spec["taus"]] for s in spec["sigmas"]]
    with open(os.path.join(d, "cutoff-results.json"), "w") as f:
        json.dump({"k": ks}, f)


if __name__ == "__main__":
    run(sys.argv[1])
