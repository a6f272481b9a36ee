"""hnswlib's side of bench/ann, on the same files and parameters.

    python3 hnswlib_ann.py DIR M EF_CONSTRUCTION THREADS

Builds with one thread and again with THREADS (as moonforge builds), then
searches with THREADS at each ef, REPEATS times (queries/s: the best pass,
the machine may be shared). Recall is against DIR/exact_ids.npy
(moonforge's exact search; ids there are 0-based rows). Prints
  build <seconds one thread> <seconds THREADS threads>
  hnsw <ef> <recall@10> <qps>
"""
import sys
import time

import hnswlib
import numpy as np

K, REPEATS = 10, 3


def build(base, m, efc, threads):
    index = hnswlib.Index(space="ip", dim=base.shape[1])  # vectors are unit length: ip is the cosine
    index.init_index(max_elements=len(base), M=m, ef_construction=efc, random_seed=100)
    index.set_num_threads(threads)
    t0 = time.perf_counter()
    index.add_items(base, np.arange(len(base)))
    return index, time.perf_counter() - t0


def main():
    d, m, efc, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    base, queries = np.load(f"{d}/base.npy"), np.load(f"{d}/queries.npy")
    truth = np.load(f"{d}/exact_ids.npy").reshape(len(queries), K)
    _, one = build(base, m, efc, 1)
    index, many = build(base, m, efc, threads)
    print(f"build {one:.2f} {many:.2f}")
    for ef in (10, 20, 40, 80, 160):
        index.set_ef(ef)
        seconds = float("inf")
        for _ in range(REPEATS):
            t0 = time.perf_counter()
            got, _ = index.knn_query(queries, k=K, num_threads=threads)
            seconds = min(seconds, time.perf_counter() - t0)
        recall = np.mean([len(set(got[q]) & set(truth[q])) / K for q in range(len(queries))])
        print(f"hnsw {ef} {recall:.4f} {len(queries) / seconds:.1f}")


if __name__ == "__main__":
    main()
