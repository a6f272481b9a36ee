#!/usr/bin/env bash
# Tokenizer throughput: moonforge against HF tokenizers on the same text and
# tokenizer, one thread each, in one run. Prints MB/s for both, the ratio,
# and whether the ids are identical.
#   bash bench/tokenize/run.sh [BUILD_DIR]     # default build/; MB=4 (text size)
# Tokenizer: the SmolLM2 GGUF when datasets/cache/smollm2 holds it, else the
# small Llama 3 style golden tokenizer. Text: the first MB megabytes of the
# KJV pretraining corpus when present, else the golden corpus repeated, cut
# into documents of about 1 KB that each side encodes one by one (HF:
# encode_batch on one thread), as data preparation does.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${1:-build}
MB=${MB:-4}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

TOKENIZER=datasets/cache/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
[ -f "$TOKENIZER" ] || TOKENIZER=tests/reference/golden/tokenizers/llama3.json
CORPUS=datasets/cache/pretrain_corpus/train.txt
[ -f "$CORPUS" ] || CORPUS=tests/reference/golden/tokenizers/corpus.txt
python3 - "$CORPUS" "$MB" "$WORK/text.txt" <<'PY'
import sys
src, mb, out = sys.argv[1], float(sys.argv[2]), sys.argv[3]
data = open(src, "rb").read()
n = int(mb * 1e6)
data = (data * (n // len(data) + 1))[:n].replace(b"\n", b" ")
# documents of about 1 KB (cut at spaces), one per line
docs, start = [], 0
while start < len(data):
    end = data.rfind(b" ", start, start + 1000)
    end = len(data) if end <= start or start + 1000 >= len(data) else end
    docs.append(data[start:end])
    start = end
open(out, "wb").write(b"\n".join(docs))
PY
echo "tokenizer: $TOKENIZER"
echo "text: $(wc -c < "$WORK/text.txt") bytes from $CORPUS"
export RAYON_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false MOONFORGE_THREADS=1
MF=$("$BUILD/moonforge" exec bench/tokenize/tokenize.lua "$TOKENIZER" "$WORK/text.txt" "$WORK/mf.npy" | tail -1)
HF=$(python3 bench/tokenize/hf_tokenize.py "$TOKENIZER" "$WORK/text.txt" "$WORK/mf.npy" | tail -1)
python3 - "$MF" "$HF" <<'PY'
import sys
mf, hf = float(sys.argv[1]), sys.argv[2].split()
print(f"moonforge      {mf:8.2f} MB/s")
print(f"HF tokenizers  {float(hf[0]):8.2f} MB/s   (ids identical: {hf[1]})")
print(f"ratio          {mf / float(hf[0]):8.2f}x")
PY
