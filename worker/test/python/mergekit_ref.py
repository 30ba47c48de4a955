"""mergekit reference for the delta-space merges (worker/test/delta-merge.test.ts).

Runs mergekit's own merge methods (the version pinned in scripts/lib/pyenv.sh, on
PYTHONPATH=$LOWRANK_MERGEKIT_PATH) on the tensors the test wrote: generalized task
arithmetic (task_arithmetic, ties, dare_linear, dare_ties) with torch.bernoulli replaced
by the test's masks, and model_stock; plus torch.linalg.svd truncations for the
re-factoring. Usage: mergekit_ref.py <workdir> (reads cases.json, writes results.json).
"""

import sys

import torch
from mergekit.merge_methods import registry
from mergekit.merge_methods.base import TensorEntry, TensorGroup

import f32io


def group(base, tensors):
    entries = [TensorEntry(id="base", tensor=base, is_base=True)]
    entries += [TensorEntry(id=f"m{i}", tensor=t) for i, t in enumerate(tensors)]
    return TensorGroup(entries=entries)


def run_gta(work, case):
    deltas = [torch.from_numpy(f32io.load(work, e).copy()) for e in case["deltas"]]
    masks = [torch.from_numpy(f32io.load(work, e).astype("float32")) for e in case.get("masks", [])]
    queue = list(masks)
    real_bernoulli = torch.bernoulli

    def injected(p, *args, **kwargs):  # mergekit draws one mask per input, in input order
        m = queue.pop(0)
        assert m.shape == p.shape
        return m.to(p.dtype)

    torch.bernoulli = injected
    try:
        base = torch.zeros_like(deltas[0])
        ids = [f"m{i}" for i in range(len(deltas))]
        params = {
            "weight": dict(zip(ids, case["weights"])),
            "density": {i: case.get("density", 1.0) for i in ids},
            "lambda": case.get("lambda", 1.0),
            "int8_mask": False,
        }
        method = registry.get(case["method"])
        defaults = {p.name: p.default for p in method.spec.parameters}
        params["normalize"] = case.get("normalize", defaults["normalize"])
        params["rescale"] = case.get("rescale", defaults["rescale"])
        out = method.merge_group(group(base, deltas), **params)
    finally:
        torch.bernoulli = real_bernoulli
    assert not queue, "a mask was not used"
    return {"mix": f32io.save(work, case["id"] + "-mix", out.numpy())}


def run_model_stock(work, case):
    ws = [torch.from_numpy(f32io.load(work, e).copy()) for e in case["deltas"]]
    base = torch.zeros_like(ws[0])
    method = registry.get("model_stock")
    out = method.merge_group(group(base, ws), filter_wise=case["filter_wise"])
    return {"mix": f32io.save(work, case["id"] + "-mix", out.numpy())}


def run_svd(work, case):
    m = torch.from_numpy(f32io.load(work, case["m"]).copy()).double()
    u, s, vh = torch.linalg.svd(m, full_matrices=False)
    k = case["rank"]
    approx = (u[:, :k] * s[:k]) @ vh[:k]
    return {
        "approx": f32io.save(work, case["id"] + "-approx", approx.float().numpy()),
        "sigma": s.tolist(),
        "energy": float((s[:k] ** 2).sum() / (s**2).sum()),
    }


def main():
    work = sys.argv[1]
    runners = {"gta": run_gta, "model_stock": run_model_stock, "svd": run_svd}
    results = {}
    for case in f32io.read_json(work, "cases.json"):
        results[case["id"]] = runners[case["kind"]](work, case)
    import importlib.metadata

    results["_version"] = importlib.metadata.version("mergekit")
    f32io.write_json(work, "results.json", results)


if __name__ == "__main__":
    main()
