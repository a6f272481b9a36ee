"""Synthetic embeddings for bench/ann: a Gaussian mixture on the unit sphere.

    python3 make_data.py N DIM NQ OUT_DIR

Vectors are c + noise for one of 100 random unit centres c, noise
N(0, 0.6^2 / DIM) per component, then scaled to unit length: clusters like
those of sentence embeddings, harder than uniform random vectors to tell
apart within a cluster and easier across them. Queries come from the same
mixture. Writes base.npy [N, DIM] and queries.npy [NQ, DIM] (float32).
"""
import sys

import numpy as np


def mixture(rng, centres, n, dim):
    picks = rng.integers(0, len(centres), n)
    x = centres[picks] + rng.normal(0, 0.6 / np.sqrt(dim), (n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def main():
    n, dim, nq, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 1, (100, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    np.save(f"{out}/base.npy", mixture(rng, centres, n, dim))
    np.save(f"{out}/queries.npy", mixture(rng, centres, nq, dim))


if __name__ == "__main__":
    main()
