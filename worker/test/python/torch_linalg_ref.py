"""PyTorch reference for worker/test/linalg.test.ts.

  torch_linalg_ref.py DIR   reads DIR/cases.json and writes DIR/results.json: per case,
                            torch.linalg.svd (fp32, thin) of `m`, or of the dense delta
                            scale * B @ A for op "delta_svd"; torch.linalg.qr (reduced)
                            for op "qr", with R's diagonal made non-negative as ours is.
"""

import sys

import torch
from f32io import load, read_json, save, write_json


def run(d):
    results = []
    for case in read_json(d, "cases.json")["cases"]:
        key, op = case["id"], case["op"]
        out = {"id": key}
        if op == "qr":
            q, r = torch.linalg.qr(torch.from_numpy(load(d, case["m"])), mode="reduced")
            sign = torch.sign(torch.diagonal(r))
            sign[sign == 0] = 1
            out["q"] = save(d, key + ".q", (q * sign).numpy())
            out["r"] = save(d, key + ".r", (r * sign[:, None]).numpy())
        else:
            if op == "delta_svd":
                m = case["scale"] * (torch.from_numpy(load(d, case["B"])) @ torch.from_numpy(load(d, case["A"])))
            else:
                m = torch.from_numpy(load(d, case["m"]))
            u, s, vh = torch.linalg.svd(m, full_matrices=False)
            out["u"], out["s"], out["vt"] = save(d, key + ".u", u.numpy()), save(d, key + ".s", s.numpy()), save(d, key + ".vt", vh.numpy())
        results.append(out)
    write_json(d, "results.json", {"results": results, "torch": torch.__version__})


if __name__ == "__main__":
    run(sys.argv[1])
