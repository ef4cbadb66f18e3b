#!/usr/bin/env python3
"""The GLUE fine-tuning step in PyTorch, beside `cargo bench -p cram-glue --bench glue_step`.

Written for cram from the model facts in ../shared/vectors/README.md: pre-norm layers, fused
head-major QKV without biases, GELU-GLU feed-forward, scaled sinusoidal positions, final
LayerNorm; the classifier pools the first token through a dense layer and tanh, then dropout and
a linear head. It trains as `GLUE_sane` fine-tunes: dropout 0.1 at every site (embedding,
attention probabilities, both residual branches, pooler), AdamW (betas 0.9/0.98, eps 1e-6, no
weight decay, no clipping), cross-entropy over the classes, one optimizer step per batch.

The batches are the benchmark's synthetic ones, built by the same formulas as cram's
(`cram_glue::bench`): row `r` of step `t` has `bench_length(t, r)` real tokens and the batch is
padded to its longest row (dynamic padding), with the padding masked out of attention.

Prints examples/s (and, with --json, writes them) for each case.
"""

import argparse
import json
import math
import os
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

ARCHS = {
    "crammed-bert": dict(vocab=32768, hidden=768, layers=16, heads=12, intermed=3072, head_dim=1024),
    "tiny": dict(vocab=8192, hidden=128, layers=2, heads=2, intermed=512, head_dim=1024),
}
MAX_SEQ = 128
DROPOUT = 0.1


def bench_length(step, row, lo, hi):
    """cram_glue::bench::bench_length: real tokens of row `row` in step `step`."""
    return lo + ((step * 16 + row) * 7919) % (hi - lo + 1)


def bench_token(step, row, pos, vocab):
    """cram_glue::bench::bench_token."""
    return 5 + (step * 131 + row * 31 + pos * 7) % (vocab - 5)


def make_batch(step, batch, lo, hi, vocab, labels):
    lengths = [bench_length(step, r, lo, hi) for r in range(batch)]
    seq = max(lengths)
    ids = torch.zeros(batch, seq, dtype=torch.long)
    mask = torch.zeros(batch, seq, dtype=torch.bool)
    for r, n in enumerate(lengths):
        ids[r, :n] = torch.tensor([bench_token(step, r, p, vocab) for p in range(n)])
        mask[r, :n] = True
    y = torch.tensor([(step + r) % labels for r in range(batch)])
    return ids, mask, y


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
        self.drop = nn.Dropout(DROPOUT)

    def forward(self, x, bias):
        b, s, h = x.shape
        hd = h // self.heads
        qkv = self.qkv(self.norm1(x)).view(b, s, self.heads, 3 * hd).transpose(1, 2)
        q, k, v = qkv.split(hd, dim=-1)
        p = DROPOUT if self.training else 0.0
        ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=p)
        x = x + self.drop(self.out(ctx.transpose(1, 2).reshape(b, s, h)))
        a, g = self.ffn_in(self.norm2(x)).chunk(2, dim=-1)
        return x + self.drop(self.ffn_out(a * F.gelu(g)))


class Classifier(nn.Module):
    def __init__(self, vocab, hidden, layers, heads, intermed, head_dim, labels):
        super().__init__()
        self.word = nn.Embedding(vocab, hidden, padding_idx=0)
        pos = torch.arange(MAX_SEQ, dtype=torch.float32)[:, None]
        freq = torch.exp(torch.arange(0, hidden, 2, dtype=torch.float32) * (-math.log(10000.0) / hidden))
        table = torch.zeros(MAX_SEQ, hidden)
        table[:, 0::2] = torch.sin(pos * freq)
        table[:, 1::2] = torch.cos(pos * freq)
        self.register_buffer("pos_table", table, persistent=False)
        self.pos_scale = nn.Parameter(torch.tensor([1.0 / math.sqrt(hidden)]))
        self.emb_norm = nn.LayerNorm(hidden, eps=1e-12)
        self.drop = nn.Dropout(DROPOUT)
        self.layers = nn.ModuleList(Layer(hidden, heads, intermed) for _ in range(layers))
        self.final_norm = nn.LayerNorm(hidden, eps=1e-12)
        self.pooler = nn.Linear(hidden, head_dim)
        self.head = nn.Linear(head_dim, labels)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.trunc_normal_(m.weight, std=0.02, a=-0.04, b=0.04)

    def forward(self, ids, mask):
        b, s = ids.shape
        x = self.drop(self.emb_norm(self.word(ids) + self.pos_scale * self.pos_table[:s]))
        bias = torch.zeros(b, 1, 1, s).masked_fill(~mask[:, None, None, :], -1e4)
        for layer in self.layers:
            x = layer(x, bias)
        first = self.final_norm(x)[:, 0]
        return self.head(self.drop(torch.tanh(self.pooler(first))))


def run(arch, batch, lo, hi, steps, warmup, labels):
    torch.manual_seed(0)
    cfg = ARCHS[arch]
    model = Classifier(**cfg, labels=labels)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=4e-5, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.0)
    batches = [make_batch(t, batch, lo, hi, cfg["vocab"], labels) for t in range(warmup + steps)]
    losses = []
    tokens = 0
    for step, (ids, mask, y) in enumerate(batches):
        if step == warmup:
            start = time.perf_counter()
        loss = F.cross_entropy(model(ids, mask), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())  # a host read per step, as cram's loop makes
        if step >= warmup:
            tokens += ids.numel()
    secs = time.perf_counter() - start
    return {
        "tool": "pytorch-eager",
        "arch": arch,
        "batch": batch,
        "lengths": [lo, hi],
        "steps": steps,
        "seconds_per_step": secs / steps,
        "examples_per_second": steps * batch / secs,
        "padded_tokens_per_second": tokens / secs,
        "first_loss": losses[0],
        "last_loss": losses[-1],
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="tiny", choices=sorted(ARCHS))
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--min-len", type=int, default=8)
    p.add_argument("--max-len", type=int, default=66)
    p.add_argument("--labels", type=int, default=2)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--json", default=None)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    r = run(a.arch, a.batch, a.min_len, a.max_len, a.steps, a.warmup, a.labels)
    r["torch"] = torch.__version__
    r["threads"] = a.threads
    print(f"{r['tool']} {a.arch} batch {a.batch} lengths {a.min_len}..{a.max_len}: "
          f"{r['seconds_per_step']:.4f} s/step, {r['examples_per_second']:.1f} examples/s "
          f"(torch {torch.__version__}, {a.threads} threads); loss {r['first_loss']:.3f} -> {r['last_loss']:.3f}",
          flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(r, f, indent=2)


if __name__ == "__main__":
    main()
