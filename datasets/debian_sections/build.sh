#!/usr/bin/env bash
# Rebuilds the Debian section dataset from this machine's apt indices.
#
#   bash datasets/debian_sections/build.sh [OUT_DIR]     (default: datasets/debian_sections)
#
# Needs the main Packages index and the English translations of the
# descriptions (which Docker images often skip), so it runs
#   apt-get update -o Acquire::Languages=en
# first (through sudo when not root). The indices are those of the Debian
# release apt points at; the shipped files came from bookworm (see CARD.md).
# MOONFORGE names the moonforge executable (default: build/moonforge).
set -euo pipefail
cd "$(dirname "$0")/../.."

OUT=${1:-datasets/debian_sections}
MOONFORGE=${MOONFORGE:-build/moonforge}
LISTS=/var/lib/apt/lists
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
$sudo apt-get update -qq -o Acquire::Languages=en

# The first index of a kind from the main component of the release itself
# (not -updates or -security), whatever its compression.
find_index() {
  local found
  found=$(ls "$LISTS"/*_dists_*_main_"$1"* 2>/dev/null | grep -v -e '-updates_' -e '-security_' | head -n 1)
  [ -n "$found" ] || { echo "debian_sections: no $1 index in $LISTS" >&2; exit 1; }
  echo "$found"
}

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
/usr/lib/apt/apt-helper cat-file "$(find_index binary-amd64_Packages)" > "$TMP/Packages"
/usr/lib/apt/apt-helper cat-file "$(find_index i18n_Translation-en)" > "$TMP/Translation-en"
"$MOONFORGE" exec datasets/debian_sections/extract.lua --packages "$TMP/Packages" \
  --translations "$TMP/Translation-en" --out "$OUT"
