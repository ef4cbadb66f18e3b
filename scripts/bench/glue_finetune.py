#!/usr/bin/env python3
"""A whole GLUE_sane fine-tuning run in PyTorch, to time beside cram's `glue` stage.

The wall clock of cram's five-task run (a `glue` stage over CoLA, SST-2, MRPC, STS-B and RTE)
is compared with this script's on the same machine and the same day. It fine-tunes each task
the way cram's `glue` kind does with its defaults, so both sides do the same work:

* the GLUE Parquet files of the Hugging Face mirror (`nyu-mll/glue`: train and validation);
* texts encoded by the run's own `tokenizer.json` (Python `tokenizers`) as `[CLS] a [SEP]` or
  `[CLS] a [SEP] b [SEP]`, truncated to 128 tokens longest-first, batches padded to their longest
  row;
* the model of `glue_step.py` (the same architecture facts), dropout 0.1 at every site;
* AdamW (betas 0.9/0.98, eps 1e-6, no weight decay, no clipping), lr 4e-5, batch 16, 5 epochs,
  a fresh seeded shuffle each epoch, cosine decay after 10 % linear warm-up (Hugging Face's
  `get_cosine_schedule_with_warmup`);
* cross-entropy over the classes (mean squared error for STS-B's score);
* dev evaluation without gradients in batches of 128 after every epoch (cram's `epochs.jsonl`).

The weights start from a seeded random initialisation, not from a pretrained checkpoint. The
computation per step does not depend on the weights' values, so the timing holds; the printed
dev scores are only a check that training ran, not figures to compare.

Prints one line per task (train seconds, eval seconds, examples/s) and the run's total, and
with --json writes them.
"""

import argparse
import glob
import json
import math
import os
import sys
import time

import pyarrow.parquet as pq
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from tokenizers.processors import BertProcessing

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from glue_step import ARCHS, MAX_SEQ, Classifier  # noqa: E402

# Task -> (text columns, labels; 1 = regression).
TASKS = {
    "cola": (("sentence",), 2),
    "sst2": (("sentence",), 2),
    "mrpc": (("sentence1", "sentence2"), 2),
    "stsb": (("sentence1", "sentence2"), 1),
    "rte": (("sentence1", "sentence2"), 2),
}


def split_file(glue_dir, task, split):
    files = sorted(glob.glob(os.path.join(glue_dir, task, f"{split}-*.parquet")))
    if not files:
        sys.exit(f"no {split} Parquet file for {task} under {glue_dir}/{task}/")
    return files


def load(glue_dir, task, split, limit=None):
    cols, _ = TASKS[task]
    rows = {c: [] for c in cols + ("label",)}
    for f in split_file(glue_dir, task, split):
        t = pq.read_table(f, columns=list(rows))
        for c in rows:
            rows[c].extend(t.column(c).to_pylist())
    texts = list(zip(*(rows[c] for c in cols)))
    labels = rows["label"]
    if limit is not None:
        texts, labels = texts[:limit], labels[:limit]
    return texts, labels


def encode(tok, texts):
    """Token ids of each example with the tokenizer's BERT template and truncation (set in main),
    and how many examples were cut (cram's `train_truncated` counts the same way)."""
    inputs = [t[0] if len(t) == 1 else (t[0], t[1]) for t in texts]
    encodings = tok.encode_batch(inputs)
    return [e.ids for e in encodings], sum(1 for e in encodings if e.overflowing)


def pad(seqs, pad_id):
    seq = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), seq), pad_id, dtype=torch.long)
    mask = torch.zeros(len(seqs), seq, dtype=torch.bool)
    for r, s in enumerate(seqs):
        ids[r, : len(s)] = torch.tensor(s)
        mask[r, : len(s)] = True
    return ids, mask


def cosine_factor(step, warmup, total):
    if step < warmup:
        return step / max(1, warmup)
    progress = (step - warmup) / max(1, total - warmup)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


def loss_of(logits, y, regression):
    if regression:
        return F.mse_loss(logits.squeeze(-1), y)
    return F.cross_entropy(logits, y)


def score(preds, labels, regression):
    """Accuracy, or Pearson's r for STS-B: a check that training ran."""
    if regression:
        p = torch.tensor(preds, dtype=torch.float64)
        y = torch.tensor(labels, dtype=torch.float64)
        p, y = p - p.mean(), y - y.mean()
        return float((p * y).sum() / (p.norm() * y.norm() + 1e-12))
    return sum(int(a == b) for a, b in zip(preds, labels)) / max(1, len(labels))


def run_task(task, a, tok, ids):
    _, labels_n = TASKS[task]
    regression = labels_n == 1
    pad_id = ids[2]
    texts, labels = load(a.glue_dir, task, "train", a.max_train_examples)
    dev_texts, dev_labels = load(a.glue_dir, task, "validation")
    train, truncated = encode(tok, texts)
    dev, _ = encode(tok, dev_texts)
    torch.manual_seed(a.seed)
    cfg = dict(ARCHS[a.arch])
    model = Classifier(**cfg, labels=labels_n)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.0)
    per_epoch = math.ceil(len(train) / a.batch)
    total = per_epoch * a.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda k: cosine_factor(k, int(0.1 * total), total)
    )
    ydtype = torch.float32 if regression else torch.long
    gen = torch.Generator().manual_seed(a.seed)
    train_s = eval_s = 0.0
    last = float("nan")
    check = float("nan")
    for _ in range(a.epochs):
        start = time.perf_counter()
        model.train()
        order = torch.randperm(len(train), generator=gen).tolist()
        for b in range(0, len(order), a.batch):
            rows = order[b : b + a.batch]
            x, mask = pad([train[r] for r in rows], pad_id)
            y = torch.tensor([labels[r] for r in rows], dtype=ydtype)
            loss = loss_of(model(x, mask), y, regression)
            loss.backward()
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            last = loss.item()  # a host read per step, as cram's loop makes
        train_s += time.perf_counter() - start
        # Scored after every epoch, as cram's `epochs.jsonl` is.
        start = time.perf_counter()
        model.eval()
        preds = []
        with torch.no_grad():
            for b in range(0, len(dev), 128):
                x, mask = pad(dev[b : b + 128], pad_id)
                out = model(x, mask)
                preds.extend(out.squeeze(-1).tolist() if regression else out.argmax(-1).tolist())
        check = score(preds, dev_labels, regression)
        eval_s += time.perf_counter() - start
    return {
        "task": task,
        "train_examples": len(train),
        "train_truncated": truncated,
        "epochs": a.epochs,
        "updates": total,
        "train_seconds": train_s,
        "eval_seconds": eval_s,
        "train_examples_per_second": len(train) * a.epochs / train_s,
        "last_loss": last,
        "dev_check": check,
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--glue-dir", required=True, help="the mirror's nyu-mll/glue/resolve/main folder")
    p.add_argument("--tokenizer", required=True, help="the run's tokenizer.json (WordPiece, [CLS]/[SEP]/[PAD])")
    p.add_argument("--tasks", default="cola,sst2,mrpc,stsb,rte")
    p.add_argument("--arch", default="tiny", choices=sorted(ARCHS))
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=4e-5)
    p.add_argument("--max-train-examples", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--json", default=None)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    tok = Tokenizer.from_file(a.tokenizer)
    ids = []
    for t in ("[CLS]", "[SEP]", "[PAD]"):
        i = tok.token_to_id(t)
        if i is None:
            sys.exit(f"{a.tokenizer} has no {t} token")
        ids.append(i)
    if tok.post_processor is None:
        tok.post_processor = BertProcessing(("[SEP]", ids[1]), ("[CLS]", ids[0]))
    tok.no_padding()
    tok.enable_truncation(MAX_SEQ, strategy="longest_first", direction="right")
    if tok.get_vocab_size() > ARCHS[a.arch]["vocab"]:
        sys.exit(f"{a.tokenizer} has {tok.get_vocab_size()} tokens, more than {a.arch}'s vocabulary")
    results = []
    whole = time.perf_counter()
    for task in a.tasks.split(","):
        if task not in TASKS:
            sys.exit(f"unknown task {task!r}: one of {', '.join(TASKS)}")
        r = run_task(task, a, tok, ids)
        results.append(r)
        print(
            f"pytorch-eager {task:<5} {r['train_examples']} examples x {r['epochs']} epochs: "
            f"train {r['train_seconds']:.1f} s ({r['train_examples_per_second']:.1f} examples/s), "
            f"eval {r['eval_seconds']:.1f} s; last loss {r['last_loss']:.3f}, dev check {r['dev_check']:.3f}",
            flush=True,
        )
    total = time.perf_counter() - whole
    print(f"pytorch-eager whole run: {total:.1f} s (torch {torch.__version__}, {a.threads} threads)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"tool": "pytorch-eager", "seconds": total, "tasks": results}, f, indent=1)


if __name__ == "__main__":
    main()
