"""PyTorch replica of the ICM-LoRA generator (worker/native/src/generate/cvae.h): one
forward/backward of the GEMM-only MLP CVAE, then one torch.optim.AdamW step.

in.json: dims {input, cond, hidden, latent}, n, beta, lr, weightDecay, params (8 entries,
PyTorch Linear layout), x, c, eps. Writes out.json: mse, kl, total, grads (8), updated (8),
all computed in float64 from the same float32 inputs."""

import sys

import torch

import f32io

NAMES = ["enc.w1", "enc.b1", "enc.w2", "enc.b2", "dec.w3", "dec.b3", "dec.w4", "dec.b4"]


def main(d):
    cfg = f32io.read_json(d, "in.json")
    L = cfg["dims"]["latent"]
    params = [torch.tensor(f32io.load(d, e), dtype=torch.float64, requires_grad=True) for e in cfg["params"]]
    w1, b1, w2, b2, w3, b3, w4, b4 = params
    x = torch.tensor(f32io.load(d, cfg["x"]), dtype=torch.float64)
    c = torch.tensor(f32io.load(d, cfg["c"]), dtype=torch.float64)
    eps = torch.tensor(f32io.load(d, cfg["eps"]), dtype=torch.float64)
    h1 = torch.nn.functional.leaky_relu(x @ w1.T + b1, 0.01)
    ml = torch.cat([h1, c], 1) @ w2.T + b2
    mu, lv = ml[:, :L], ml[:, L:]
    z = mu + torch.exp(0.5 * lv) * eps
    h2 = torch.nn.functional.elu(torch.cat([z, c], 1) @ w3.T + b3)
    xh = h2 @ w4.T + b4
    mse = torch.mean((xh - x) ** 2)
    kl = torch.mean(torch.sum(-0.5 * (1 + lv - mu**2 - torch.exp(lv)), 1))
    total = mse + cfg["beta"] * kl
    total.backward()
    grads = [p.grad.detach().clone() for p in params]
    opt = torch.optim.AdamW(params, lr=cfg["lr"], betas=(0.9, 0.999), eps=1e-8, weight_decay=cfg["weightDecay"])
    opt.step()
    f32io.write_json(
        d,
        "out.json",
        {
            "mse": mse.item(),
            "kl": kl.item(),
            "total": total.item(),
            "grads": [f32io.save(d, "grad_" + n, g.numpy()) for n, g in zip(NAMES, grads)],
            "updated": [f32io.save(d, "upd_" + n, p.detach().numpy()) for n, p in zip(NAMES, params)],
        },
    )


if __name__ == "__main__":
    main(sys.argv[1])
