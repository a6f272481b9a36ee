"""Encodes each line of a text file with HF tokenizers (encode_batch, best of
3 runs, one thread: RAYON_NUM_THREADS=1) and
compares the ids with moonforge's; prints "MB/s identical" on its last line.

    python3 bench/tokenize/hf_tokenize.py TOKENIZER TEXT MOONFORGE_IDS.npy

A .gguf tokenizer is converted by transformers; its missing "smollm"
pre-tokenizer (digits one by one, then GPT-2 splitting) is put back, as in
tests/reference/make_tokenizer_golden.py.
"""
import os
import sys
import time

import numpy as np
from tokenizers import Tokenizer, pre_tokenizers


def load(path):
    if not path.endswith(".gguf"):
        return Tokenizer.from_file(path)
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path)).backend_tokenizer
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False)])
    return tok


def main():
    path, text_path, mf_ids = sys.argv[1:4]
    tok = load(path)
    tok.encode_special_tokens = True
    docs = open(text_path, encoding="utf-8").read().split("\n")
    nbytes = sum(len(d.encode("utf-8")) for d in docs)
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        encodings = tok.encode_batch(docs, add_special_tokens=False)
        best = min(best, time.perf_counter() - t0)
    ids = [i for e in encodings for i in e.ids]
    same = np.array_equal(np.asarray(ids, dtype=np.int32), np.load(mf_ids))
    print(f"{len(ids)} ids")
    print(f"{nbytes / 1e6 / best:.3f} {'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()
