"""PEFT reference for worker/test/merge-parity.test.ts.

  peft_merge_ref.py setup DIR   reads DIR/adapters.json, builds a tiny random Llama (no
                                download) with those LoRA adapters (init_lora_weights=False,
                                so B != 0) and writes every adapter's factors and scaling.
  peft_merge_ref.py merge DIR   reads DIR/cases.json, loads the saved factors into the same
                                model and runs PeftModel.add_weighted_adapter per case, with
                                torch.bernoulli answering from the DARE masks the test wrote
                                (so both sides prune the same entries); writes each merged
                                module's delta (get_delta_weight), factors and scaling.

For the svd types, the matrix M that PEFT decomposes, its singular values and its fp64
rank-k truncation are written too (`combined`, `sigma`, `best`): the fp64 result settles
disagreements (METHODS §8.1), and optimality is checkable where there is no gap at the cut. Option per case: `sign_rule_svd` makes torch.linalg.svd return METHODS §0.1
signs, so PEFT's svd_clamp quantile (which depends on the sign convention) is comparable.
"""

import sys

import torch
from f32io import load, read_json, save, write_json
from peft import LoraConfig, get_peft_model
from peft.tuners.lora import LoraLayer, LoraModel
from transformers import LlamaConfig, LlamaForCausalLM

PREFIX = "base_model.model."


def build_model(spec):
    torch.manual_seed(spec["seed"])
    cfg = LlamaConfig(**spec["llama"])
    model = LlamaForCausalLM(cfg)
    peft_model = None
    for a in spec["adapters"]:
        lc = LoraConfig(
            r=a["r"],
            lora_alpha=a["alpha"],
            target_modules=a["targets"],
            use_rslora=a.get("use_rslora", False),
            init_lora_weights=False,
            lora_dropout=0.0,
        )
        if peft_model is None:
            peft_model = get_peft_model(model, lc, adapter_name=a["name"])
        else:
            peft_model.add_adapter(a["name"], lc)
    return peft_model


def lora_layers(peft_model):
    for name, mod in peft_model.named_modules():
        if isinstance(mod, LoraLayer):
            yield name[len(PREFIX) :] if name.startswith(PREFIX) else name, mod


def setup(d):
    spec = read_json(d, "adapters.json")
    pm = build_model(spec)
    out = []
    for a in spec["adapters"]:
        mods = {}
        for name, layer in lora_layers(pm):
            if a["name"] not in layer.lora_A:
                continue
            A = layer.lora_A[a["name"]].weight.detach()
            B = layer.lora_B[a["name"]].weight.detach()
            key = f"{a['name']}.{name}"
            mods[name] = {
                "r": A.shape[0],
                "in": A.shape[1],
                "out": B.shape[0],
                "scale": layer.scaling[a["name"]],
                "A": save(d, key + ".A", A.numpy()),
                "B": save(d, key + ".B", B.numpy()),
            }
        out.append({"name": a["name"], "use_rslora": a.get("use_rslora", False), "modules": mods})
    write_json(d, "adapters.out.json", {"adapters": out, "torch": torch.__version__, "peft": __import__("peft").__version__})


class MaskFeed:
    """Answers PEFT's torch.bernoulli calls with the test's masks, by module and call order."""

    def __init__(self, d, masks, names_by_id, adapters):
        self.d, self.masks, self.names_by_id, self.adapters = d, masks, names_by_id, adapters
        self.module, self.valid, self.calls, self.space = None, [], 0, None

    def enter(self, target, space):
        self.module = self.names_by_id[id(target)]
        self.valid = [i for i, a in enumerate(self.adapters) if a in target.lora_A]
        self.calls, self.space = 0, space

    def bernoulli(self, probs, *args, **kwargs):
        n = len(self.valid)
        c = self.calls
        self.calls += 1
        if self.space == "factor":
            tensor, inp = ("A" if c < n else "B"), self.valid[c % n]
        else:
            tensor, inp = "delta", self.valid[c]
        key = f"{self.module}|{tensor}|{inp}"
        mask = torch.from_numpy(load(self.d, self.masks[key]).astype("float32")).reshape(probs.shape)
        return mask.to(probs.dtype)


def recording_svd(real_svd, feed, captured, sign_rule):
    def svd(m, *args, **kwargs):
        captured[feed.module] = m.detach().clone()
        U, S, Vh = real_svd(m, *args, **kwargs)
        if not sign_rule:
            return U, S, Vh
        idx = U.abs().argmax(dim=0)  # first maximal index: the lowest index wins ties
        sign = torch.sign(U[idx, torch.arange(U.shape[1])])
        sign[sign == 0] = 1
        k = min(U.shape[1], Vh.shape[0])
        U = U * sign
        Vh = Vh.clone()
        Vh[:k] = Vh[:k] * sign[:k, None]
        return U, S, Vh

    return svd


def merge(d):
    spec = read_json(d, "adapters.json")
    saved = read_json(d, "adapters.out.json")
    cases = read_json(d, "cases.json")["cases"]
    pm = build_model(spec)
    with torch.no_grad():
        for a in saved["adapters"]:
            for name, layer in lora_layers(pm):
                if name in a["modules"]:
                    m = a["modules"][name]
                    layer.lora_A[a["name"]].weight.copy_(torch.from_numpy(load(d, m["A"])))
                    layer.lora_B[a["name"]].weight.copy_(torch.from_numpy(load(d, m["B"])))
    names_by_id = {id(layer): name for name, layer in lora_layers(pm)}
    real_bernoulli, real_svd = torch.bernoulli, torch.linalg.svd
    real_factor = LoraModel._generalized_task_arithmetic_weighted_adapter
    real_svd_merge = LoraModel._svd_generalized_task_arithmetic_weighted_adapter
    results = []
    for case in cases:
        feed = MaskFeed(d, case.get("masks", {}), names_by_id, case["adapters"])

        def factor(self, ctype, adapters, weights, target, *a, **k):
            feed.enter(target, "factor")
            return real_factor(self, ctype, adapters, weights, target, *a, **k)

        def svd_merge(self, ctype, adapters, weights, new_rank, target, *a, **k):
            feed.enter(target, "delta")
            return real_svd_merge(self, ctype, adapters, weights, new_rank, target, *a, **k)

        name = f"merged_{case['id']}"
        LoraModel._generalized_task_arithmetic_weighted_adapter = factor
        LoraModel._svd_generalized_task_arithmetic_weighted_adapter = svd_merge
        torch.bernoulli = feed.bernoulli
        captured = {}
        torch.linalg.svd = recording_svd(real_svd, feed, captured, case.get("sign_rule_svd", False))
        try:
            pm.add_weighted_adapter(
                adapters=case["adapters"],
                weights=case["weights"],
                adapter_name=name,
                combination_type=case["combination"],
                svd_rank=case.get("svd_rank"),
                svd_clamp=case.get("svd_clamp"),
                density=case.get("density"),
                majority_sign_method=case.get("majority_sign_method", "total"),
            )
        finally:
            torch.bernoulli, torch.linalg.svd = real_bernoulli, real_svd
            LoraModel._generalized_task_arithmetic_weighted_adapter = real_factor
            LoraModel._svd_generalized_task_arithmetic_weighted_adapter = real_svd_merge
        cfg = pm.peft_config[name]
        mods = {}
        with torch.no_grad():
            for mname, layer in lora_layers(pm):
                if name not in layer.lora_A:
                    continue
                key = f"{case['id']}.{mname}"
                mods[mname] = {
                    "scale": layer.scaling[name],
                    "r": layer.lora_A[name].weight.shape[0],
                    "delta": save(d, key + ".delta", layer.get_delta_weight(name).numpy()),
                    "A": save(d, key + ".A", layer.lora_A[name].weight.numpy()),
                    "B": save(d, key + ".B", layer.lora_B[name].weight.numpy()),
                }
                if mname in captured:
                    m = captured[mname]
                    mods[mname]["combined"] = save(d, key + ".combined", m.numpy())
                    u, sv, vh = torch.linalg.svd(m.double(), full_matrices=False)
                    k = layer.lora_A[name].weight.shape[0]
                    mods[mname]["sigma"] = save(d, key + ".sigma", sv.numpy())
                    mods[mname]["best"] = save(d, key + ".best", ((u[:, :k] * sv[:k]) @ vh[:k]).numpy())
        results.append({"id": case["id"], "r": cfg.r, "lora_alpha": cfg.lora_alpha, "use_rslora": cfg.use_rslora, "modules": mods})
        pm.delete_adapter(name)
    write_json(d, "results.json", {"results": results})


if __name__ == "__main__":
    {"setup": setup, "merge": merge}[sys.argv[1]](sys.argv[2])
