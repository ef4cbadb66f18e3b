#!/usr/bin/env python3
"""The pretraining step of crammed-bert in PyTorch, for `scripts/gpu-bench.sh`.

Written for cram from the model facts in ../shared/vectors/README.md (pre-norm layers, fused
head-major QKV without biases, GELU-GLU feed-forward, scaled sinusoidal positions, final
LayerNorm, tied decoder on the 25 % masked positions only), and trained as cram's `pretrain`
stage trains it: AdamW (betas 0.9/0.98, eps 1e-12, weight decay 0.01 except biases and norms),
global gradient clipping at 0.5, dropout off, one micro-batch per optimizer step.

It reports what `cram bench` reports, for the same architecture, micro-batch and steps:
tokens/s, MFU (6 x parameters x tokens/s / the card's dense bf16 peak) and peak memory, for
eager mode and torch.compile, in fp32 and in bf16 (autocast, fp32 master weights).
"""

import argparse
import json
import math
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

ARCHS = {
    "crammed-bert": dict(vocab=32768, hidden=768, layers=16, heads=12, intermed=3072, seq=128),
    "mini": dict(vocab=8192, hidden=256, layers=4, heads=4, intermed=1024, seq=128),
    "tiny": dict(vocab=8192, hidden=128, layers=2, heads=2, intermed=512, seq=128),
}


class Layer(nn.Module):
    def __init__(self, h, heads, inter):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(h, eps=1e-12)
        self.qkv = nn.Linear(h, 3 * h, bias=False)
        self.out = nn.Linear(h, h, bias=False)
        self.norm2 = nn.LayerNorm(h, eps=1e-12)
        self.ffn_in = nn.Linear(h, inter, bias=False)
        self.ffn_out = nn.Linear(inter // 2, h, bias=False)

    def forward(self, x):
        b, s, h = x.shape
        hd = h // self.heads
        # Head-major fused projection: row h*3*hd + part*hd + d.
        qkv = self.qkv(self.norm1(x)).view(b, s, self.heads, 3 * hd).transpose(1, 2)
        q, k, v = qkv.split(hd, dim=-1)
        ctx = F.scaled_dot_product_attention(q, k, v)
        x = x + self.out(ctx.transpose(1, 2).reshape(b, s, h))
        a, g = self.ffn_in(self.norm2(x)).chunk(2, dim=-1)
        return x + self.ffn_out(a * F.gelu(g))


class CrammedMlm(nn.Module):
    def __init__(self, vocab, hidden, layers, heads, intermed, seq):
        super().__init__()
        self.word = nn.Embedding(vocab, hidden, padding_idx=0)
        pos = torch.arange(seq, dtype=torch.float32)[:, None]
        freq = torch.exp(torch.arange(0, hidden, 2, dtype=torch.float32) * (-math.log(10000.0) / hidden))
        table = torch.zeros(seq, hidden)
        table[:, 0::2] = torch.sin(pos * freq)
        table[:, 1::2] = torch.cos(pos * freq)
        self.register_buffer("pos_table", table, persistent=False)
        self.pos_scale = nn.Parameter(torch.tensor([1.0 / math.sqrt(hidden)]))
        self.emb_norm = nn.LayerNorm(hidden, eps=1e-12)
        self.layers = nn.ModuleList(Layer(hidden, heads, intermed) for _ in range(layers))
        self.final_norm = nn.LayerNorm(hidden, eps=1e-12)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.trunc_normal_(m.weight, std=0.02, a=-0.04, b=0.04)
        with torch.no_grad():
            self.word.weight[0].zero_()

    def forward(self, ids, positions, targets):
        b, s = ids.shape
        x = self.emb_norm(self.word(ids) + self.pos_scale * self.pos_table[:s])
        for layer in self.layers:
            x = layer(x)
        h = self.final_norm(x).reshape(b * s, -1)[positions]
        logits = h @ self.word.weight.t()
        return F.cross_entropy(logits.float(), targets)


def mask_batch(gen, b, s, vocab, device):
    """cram's collator: round(0.25 s) positions per row; 80 % [MASK], 10 % random, 10 % kept."""
    ids = torch.randint(5, vocab, (b, s), generator=gen)
    n = round(0.25 * s)
    picks = torch.argsort(torch.rand(b, s, generator=gen), dim=1)[:, :n]
    flat = (picks + torch.arange(b)[:, None] * s).reshape(-1).sort().values
    targets = ids.reshape(-1)[flat].clone()
    inputs = ids.reshape(-1).clone()
    order = torch.rand(flat.numel(), generator=gen)
    inputs[flat[order < 0.8]] = 4
    rand = (order >= 0.8) & (order < 0.9)
    inputs[flat[rand]] = torch.randint(0, vocab, (int(rand.sum()),), generator=gen)
    return inputs.view(b, s).to(device), flat.to(device), targets.to(device)


def run(arch, micro_batch, steps, warmup, precision, compiled, device, peak):
    torch.manual_seed(0)
    cfg = ARCHS[arch]
    model = CrammedMlm(**cfg).to(device)
    params = sum(p.numel() for p in model.parameters())
    decay = [p for n, p in model.named_parameters() if "norm" not in n and "bias" not in n]
    rest = [p for n, p in model.named_parameters() if "norm" in n or "bias" in n]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": rest, "weight_decay": 0.0}],
        lr=1e-3, betas=(0.9, 0.98), eps=1e-12, fused=device.type == "cuda",
    )
    step_model = torch.compile(model) if compiled else model
    gen = torch.Generator().manual_seed(1)
    batches = [mask_batch(gen, micro_batch, cfg["seq"], cfg["vocab"], device) for _ in range(4)]
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    losses = []
    for step in range(warmup + steps):
        if step == warmup:
            if cuda:
                torch.cuda.synchronize(device)
            start = time.perf_counter()
        ids, positions, targets = batches[step % len(batches)]
        with torch.autocast(device.type, dtype=dtype, enabled=precision == "bf16"):
            loss = step_model(ids, positions, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())  # a host read per step, as cram's loop makes
    secs = time.perf_counter() - start
    tps = steps * micro_batch * cfg["seq"] / secs
    return {
        "tool": "pytorch-compile" if compiled else "pytorch-eager",
        "precision": precision,
        "parameters": params,
        "micro_batch": micro_batch,
        "seq_len": cfg["seq"],
        "steps": steps,
        "seconds_per_step": secs / steps,
        "tokens_per_second": tps,
        "model_flops_per_second": 6 * params * tps,
        "mfu": (6 * params * tps / (peak * 1e12)) if peak else None,
        "peak_memory_bytes": torch.cuda.max_memory_reserved(device) if cuda else None,
        "first_loss": losses[0],
        "last_loss": losses[-1],
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="crammed-bert", choices=sorted(ARCHS))
    p.add_argument("--micro-batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--precision", default="fp32,bf16")
    p.add_argument("--modes", default="eager,compile")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--peak-tflops", type=float, default=None)
    p.add_argument("--json", default=None)
    a = p.parse_args()
    device = torch.device(a.device)
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32, as in cram
    torch.backends.cudnn.allow_tf32 = False
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"torch {torch.__version__} on {card}", flush=True)
    rows = []
    for mode in a.modes.split(","):
        for precision in a.precision.split(","):
            try:
                r = run(a.arch, a.micro_batch, a.steps, a.warmup, precision, mode == "compile", device, a.peak_tflops)
            except Exception as e:  # torch.compile needs a C compiler and Triton; say so, go on
                print(f"{mode} {precision}: failed: {e}", file=sys.stderr, flush=True)
                continue
            rows.append(r)
            mfu = f"{100 * r['mfu']:.1f} %" if r["mfu"] is not None else "n/a"
            mem = f"{r['peak_memory_bytes'] / 2**30:.2f} GiB" if r["peak_memory_bytes"] else "n/a"
            print(f"{r['tool']:<16} {precision:<5} {r['tokens_per_second']:>12.0f} tokens/s  "
                  f"MFU {mfu}  peak memory {mem}  loss {r['first_loss']:.3f} -> {r['last_loss']:.3f}", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"card": card, "torch": torch.__version__, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
