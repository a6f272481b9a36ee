#!/usr/bin/env bash
# Approximate nearest neighbours: moonforge's exact and HNSW search against
# hnswlib (pip install hnswlib) on the same embeddings, in one run.
#   bash bench/ann/run.sh [BUILD_DIR]   # default build/; N=100000 DIM=384 NQ=1000 THREADS=2 M=16 EFC=200
#   DATA=text bash bench/ann/run.sh     # real text instead of the synthetic mixture
# DATA=synthetic (the default) draws a Gaussian mixture (make_data.py);
# DATA=text embeds the pretraining corpus's paragraphs with all-MiniLM-L6-v2
# (embed_corpus.lua; needs datasets/pretrain_corpus/build.sh and
# datasets/minilm/fetch.sh, and a few minutes more; DIM is then 384).
# Prints, per ef_search, recall@10 against exact search, queries/s and (for
# moonforge) similarities computed per query; build times (both with THREADS
# threads, and hnswlib also with one); and the ratios at the smallest ef
# where each side reaches recall 0.95, at equal thread counts.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${1:-build}
DATA=${DATA:-synthetic} N=${N:-100000} DIM=${DIM:-384} NQ=${NQ:-1000} THREADS=${THREADS:-2} M=${M:-16} EFC=${EFC:-200}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

case $DATA in
  synthetic)
    python3 bench/ann/make_data.py "$N" "$DIM" "$NQ" "$WORK"
    what="Gaussian mixture, 100 clusters" ;;
  text)
    MOONFORGE_THREADS=$THREADS "$BUILD/moonforge" exec bench/ann/embed_corpus.lua "$WORK" "$N" "$NQ"
    DIM=384 what="all-MiniLM-L6-v2 embeddings of corpus paragraphs; queries: held-out paragraphs" ;;
  *) echo "run.sh: DATA must be synthetic or text" >&2; exit 2 ;;
esac
echo "data: $N vectors of dimension $DIM ($what), $NQ queries; M=$M ef_construction=$EFC threads=$THREADS"
MOONFORGE_THREADS=$THREADS "$BUILD/moonforge" exec bench/ann/ann.lua "$WORK" "$M" "$EFC" > "$WORK/mf.txt"
python3 bench/ann/hnswlib_ann.py "$WORK" "$M" "$EFC" "$THREADS" > "$WORK/hl.txt"
python3 - "$WORK/mf.txt" "$WORK/hl.txt" "$N" "$THREADS" <<'PY'
import sys
mf = [l.split() for l in open(sys.argv[1])]
hl = [l.split() for l in open(sys.argv[2])]
n, threads = int(sys.argv[3]), int(sys.argv[4])
exact = next(l for l in mf if l[0] == "exact")
mf_build = float(next(l for l in mf if l[0] == "build")[1])
hl_build = [float(x) for x in next(l for l in hl if l[0] == "build")[1:]]
print(f"exact search      {float(exact[1]):10.1f} queries/s, {exact[2]} similarities per query")
print(f"build  moonforge  {mf_build:8.2f} s ({threads} threads)")
print(f"       hnswlib    {hl_build[1]:8.2f} s ({threads} threads)   {hl_build[0]:8.2f} s (1 thread)")
print(f"{'ef':>5} {'mf recall':>10} {'mf q/s':>10} {'mf sims/q':>10} {'hl recall':>10} {'hl q/s':>10}")
mf_rows = [l for l in mf if l[0] == "hnsw"]
hl_rows = [l for l in hl if l[0] == "hnsw"]
for a, b in zip(mf_rows, hl_rows):
    print(f"{a[1]:>5} {float(a[2]):10.4f} {float(a[3]):10.1f} {int(a[4]):10d} {float(b[2]):10.4f} {float(b[3]):10.1f}")
first = lambda rows: next((r for r in rows if float(r[2]) >= 0.95), None)
a, b = first(mf_rows), first(hl_rows)
if a:
    print(f"moonforge at recall {float(a[2]):.4f} (ef {a[1]}): {n / int(a[4]):.1f}x fewer similarities than exact")
if a and b:
    print(f"at recall >= 0.95: queries/s ratio {float(a[3]) / float(b[3]):.2f}x (moonforge ef {a[1]}, hnswlib ef {b[1]}); "
          f"build ratio {hl_build[1] / mf_build:.2f}x ({threads} threads)")
PY
