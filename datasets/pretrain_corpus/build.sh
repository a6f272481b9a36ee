#!/usr/bin/env bash
# Builds the pretraining corpus from public English text shipped by Debian:
# the King James Bible (bible-kjv), the Jargon File (jargon-text) and the
# WordNet glosses (wordnet-base).
#
#   bash datasets/pretrain_corpus/build.sh          write datasets/cache/pretrain_corpus/
#   bash datasets/pretrain_corpus/build.sh sample   ... and rewrite sample.txt from it
#
# Output: train.txt and eval.txt, UTF-8, one paragraph per line. Paragraphs
# come in a fixed order (Bible, Jargon File, WordNet) and every 20th one goes
# to eval.txt, so the same packages always give the same bytes. Needs apt-get
# (through sudo when not root) only when a package is missing.
set -euo pipefail
cd "$(dirname "$0")/../.."

OUT=datasets/cache/pretrain_corpus
SAMPLE=datasets/pretrain_corpus/sample.txt
PACKAGES=(bible-kjv bible-kjv-text jargon-text wordnet-base)
JARGON=/usr/share/doc/jargon-text/jargon.txt.gz
WORDNET=/usr/share/wordnet

install_missing() {
  local missing=() p
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return
  echo "pretrain_corpus: installing ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# The whole Bible as printed by the bible program: blank-line separated
# blocks that are either a chapter heading ("Genesis 1") or the chapter's
# verses ("  1 In the beginning ..."), wrapped at the line width. One chapter
# becomes one paragraph, without its heading and verse numbers.
bible_paragraphs() {
  bible -l 100000 "gen1:1-rev22:21" </dev/null | perl -CSD -00 -ne '
    next unless /^\s+\d+ /;
    s/^\s+\d+ //mg;
    s/[\s\x{a0}]+/ /g; s/^ | $//g;
    print "$_\n";'
}

# The Jargon File as plain text: blank-line separated blocks. Tables (box
# drawing), the table of contents and headings (fewer than 8 words) are
# dropped; a lexicon headword line (":foo: /pronunciation/, n.") is joined to
# the definition that follows it; {cross-reference} braces are removed.
jargon_paragraphs() {
  zcat "$JARGON" | perl -CSD -00 -ne '
    next if /[\x{2500}-\x{257f}]/;
    s/[\s\x{a0}]+/ /g; s/^ | $//g;
    s/\{([^{}]*)\}/$1/g;
    if (/^:(.+?):(.*)$/ && !/\. \S/) {
      my ($word, $rest) = ($1, $2);
      $rest =~ s{^ //,?}{};
      $head = "$word:$rest";
      next;
    }
    my @words = split / /;
    if (defined $head) { $_ = "$head $_"; undef $head; }
    elsif (@words < 8) { next; }
    print "$_\n";'
}

# WordNet data files: one synset a line, "offset lex pos n word lexid ... |
# gloss". Each synset becomes "headword: gloss" (underscores to spaces, the
# adjective position markers like "(a)" dropped). License lines start with
# two spaces and carry no "|".
wordnet_paragraphs() {
  local part
  for part in adj adv noun verb; do
    perl -CSD -ne '
      next if /^  /;
      my ($head, $gloss) = split / \| /, $_, 2;
      next unless defined $gloss;
      my $word = (split / /, $head)[4];
      $word =~ s/_/ /g; $word =~ s/\([a-z]+\)$//;
      $gloss =~ s/[\s\x{a0}]+/ /g; $gloss =~ s/^ | $//g;
      print "$word: $gloss\n";' "$WORDNET/data.$part"
  done
}

# Unigram entropy of a file's bytes in bits per byte.
byte_entropy() {
  perl -e '
    local $/; my $s = <STDIN>; my %n; $n{$_}++ for unpack "C*", $s;
    my ($h, $total) = (0, length $s);
    for (values %n) { my $p = $_ / $total; $h -= $p * log($p) / log(2); }
    printf "%.4f\n", $h;' <"$1"
}

# The sample shipped for tests: about 10 KB of each source, whole
# paragraphs, one a line — Genesis 1-3, the first lexicon entries of the
# Jargon File and the first noun glosses of WordNet.
write_sample() {
  {
    bible_paragraphs | sed -n '1,3p'
    jargon_paragraphs | sed -n '234,268p'
    wordnet_paragraphs | sed -n '21778,21880p'
  } >"$SAMPLE"
}

install_missing
mkdir -p "$OUT"
{ bible_paragraphs; jargon_paragraphs; wordnet_paragraphs; } |
  awk -v train="$OUT/train.txt" -v eval="$OUT/eval.txt" '{ print > (NR % 20 == 0 ? eval : train) }'
files=("$OUT/train.txt" "$OUT/eval.txt")
if [ "${1:-}" = sample ]; then
  write_sample
  files+=("$SAMPLE")
fi

for f in "${files[@]}"; do
  printf '%-40s %10d bytes %7d paragraphs  sha256 %s\n' "$f" "$(wc -c <"$f")" "$(wc -l <"$f")" \
    "$(sha256sum "$f" | cut -d' ' -f1)"
done
echo "unigram byte entropy of eval.txt: $(byte_entropy "$OUT/eval.txt") bits/byte"
