"""Encodes each line of a text file with sentence-transformers on CPU
(best of 3 runs, batch 32, THREADS torch threads) and prints sentences/s and
the lowest cosine to each of moonforge's embedding files (.npy) on its last
line.
    python3 bench/embed/st_embed.py MODEL TEXT MF.npy [MF.npy ...] THREADS
"""
import sys
import time

import numpy as np
import torch
from sentence_transformers import SentenceTransformer

model_dir, text_path, mf_paths, threads = sys.argv[1], sys.argv[2], sys.argv[3:-1], int(sys.argv[-1])
torch.set_num_threads(threads)
texts = open(text_path, encoding="utf-8").read().splitlines()
model = SentenceTransformer(model_dir, device="cpu")
best = float("inf")
for _ in range(3):
    t0 = time.perf_counter()
    emb = model.encode(texts, batch_size=32, convert_to_numpy=True)
    best = min(best, time.perf_counter() - t0)
lowest = []
for path in mf_paths:
    mf = np.load(path)
    cos = (emb * mf).sum(1) / (np.linalg.norm(emb, axis=1) * np.linalg.norm(mf, axis=1))
    lowest.append(f"{cos.min():.6f}")
print(f"{len(texts) / best:.3f} " + " ".join(lowest))
