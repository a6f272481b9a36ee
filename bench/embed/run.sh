#!/usr/bin/env bash
# Sentence-embedding throughput: moonforge's mf.embed, in f32 and in int8
# precision, against sentence-transformers (PyTorch, f32) on
# all-MiniLM-L6-v2, the same sentences, batch size 32 and THREADS threads
# each, in one run. Prints sentences/s for each, moonforge's ratios to
# sentence-transformers, and the lowest cosine between each moonforge
# precision's embeddings and sentence-transformers'.
#   bash bench/embed/run.sh [BUILD_DIR]     # default build/; THREADS=2 N=2000
# Needs datasets/minilm/fetch.sh and pip's sentence-transformers.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${1:-build}
THREADS=${THREADS:-2}
N=${N:-2000}
MODEL=datasets/cache/minilm/all-MiniLM-L6-v2
[ -f "$MODEL/model.safetensors" ] || { echo "embed: run datasets/minilm/fetch.sh first" >&2; exit 1; }
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# Sentences of 4 to 60 words drawn from a fixed word list (seeded), one a line.
python3 - "$N" "$WORK/sentences.txt" <<'PY'
import random, sys
n, out = int(sys.argv[1]), sys.argv[2]
words = ("the invoice for my account was charged twice and I need a refund please help "
         "password reset email never arrived after I tried to log in from a new device "
         "shipping of order 4471 is delayed by three weeks while support has not answered "
         "can you explain how the retrieval index chooses its nearest neighbours quickly").split()
rng = random.Random(7)
with open(out, "w") as f:
    for _ in range(n):
        f.write(" ".join(rng.choice(words) for _ in range(rng.randint(4, 60))).capitalize() + ".\n")
PY
echo "model: $MODEL; $N sentences; $THREADS threads; batch 32"
export MOONFORGE_THREADS=$THREADS OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS
MF=$("$BUILD/moonforge" exec bench/embed/embed.lua "$MODEL" "$WORK/sentences.txt" "$WORK/f32.npy" f32 | tail -1)
MF8=$("$BUILD/moonforge" exec bench/embed/embed.lua "$MODEL" "$WORK/sentences.txt" "$WORK/int8.npy" int8 | tail -1)
ST=$(python3 bench/embed/st_embed.py "$MODEL" "$WORK/sentences.txt" "$WORK/f32.npy" "$WORK/int8.npy" "$THREADS" | tail -1)
python3 - "$MF" "$MF8" "$ST" <<'PY'
import sys
mf, mf8, st = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3].split()
rate = float(st[0])
print(f"moonforge f32          {mf:9.1f} sentences/s   {mf / rate:5.2f}x   lowest cosine to sentence-transformers {st[1]}")
print(f"moonforge int8         {mf8:9.1f} sentences/s   {mf8 / rate:5.2f}x   lowest cosine to sentence-transformers {st[2]}")
print(f"sentence-transformers  {rate:9.1f} sentences/s   (PyTorch f32)")
PY
