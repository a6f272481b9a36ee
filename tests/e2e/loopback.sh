# Sourced by end-to-end tests that start servers on 127.0.0.1. Sets root,
# MOONFORGE, a temporary folder $tmp (with its own cache), fail(), and an
# array pids whose processes are killed, by pid, when the test ends. Proxy
# settings and API keys from the environment are dropped so requests stay
# on loopback and carry only what the test gives them.
set -euo pipefail
cd "${MF_SOURCE_DIR:-.}"
root=$(pwd)
MOONFORGE=$(realpath "${MOONFORGE:-build/moonforge}")
tmp=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY OPENAI_API_KEY MOONFORGE_API_KEY
export LUA_PATH="$root/tests/lua/?.lua;;"
export MOONFORGE_CACHE="$tmp/cache"
