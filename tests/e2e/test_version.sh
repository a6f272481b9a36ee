#!/usr/bin/env bash
# `moonforge version` (and so every run's record) names the commit the binary
# was built from: in a git checkout, the checkout's HEAD (with -dirty when
# tracked files differ), looked up at build time rather than when CMake was
# configured. Skips outside a git checkout.
set -euo pipefail
cd "${MF_SOURCE_DIR:-.}"
MOONFORGE=$(realpath "${MOONFORGE:-build/moonforge}")
fail() { echo "FAIL: $*" >&2; exit 1; }

head=$(git rev-parse --short=12 HEAD 2>/dev/null) || { echo "skip: not a git checkout"; exit 0; }
line=$("$MOONFORGE" version)
case "$line" in
  "moonforge "*" ($head)" | "moonforge "*" ($head-dirty)") ;;
  *) fail "'$line' does not name HEAD $head (rebuild after committing?)" ;;
esac
echo "ok: $line"
