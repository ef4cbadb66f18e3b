"""Trains the reference's WordPiece tokenizer with Python `tokenizers` on a
cram documents directory and prints the training time as JSON.

The configuration is the `tokenizer` kind's default (the reference's
`_get_sane_normalizers`: ``/'' -> ", NFD, lowercase, strip accents, runs of
spaces -> one, non-ASCII deleted; `Whitespace` pre-tokenizer; WordPiece with
the five special tokens), trained the reference's way, from an iterator of
document batches. Used by `cargo bench -p cram-tokens --bench tokenizer_train`.

Usage: python3 tokenizer_train.py DOCS_DIR VOCAB_SIZE [OUT_TOKENIZER_JSON]
"""

import glob
import json
import os
import sys
import time

import pyarrow.parquet as pq
from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers


def main() -> None:
    docs_dir, vocab_size = sys.argv[1], int(sys.argv[2])
    texts = []
    for path in sorted(glob.glob(os.path.join(docs_dir, "part-*.parquet"))):
        texts.extend(pq.read_table(path, columns=["text"]).column("text").to_pylist())

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.Sequence(
        [
            normalizers.Replace("``", '"'),
            normalizers.Replace("''", '"'),
            normalizers.NFD(),
            normalizers.Lowercase(),
            normalizers.StripAccents(),
            normalizers.Replace(Regex(" {2,}"), " "),
            normalizers.Replace(Regex(r"[^\x00-\x7F]+"), ""),
        ]
    )
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
        show_progress=False,
    )

    def batches(size: int = 1000):
        for i in range(0, len(texts), size):
            yield texts[i : i + size]

    start = time.perf_counter()
    tok.train_from_iterator(batches(), trainer=trainer, length=len(texts))
    seconds = time.perf_counter() - start
    if len(sys.argv) > 3:
        tok.save(sys.argv[3])
    print(
        json.dumps(
            {
                "seconds": seconds,
                "documents": len(texts),
                "vocab_size": tok.get_vocab_size(),
                "threads": os.cpu_count(),
            }
        )
    )


if __name__ == "__main__":
    main()
