"""Golden BM25 scores for tests/lua/test_rag.lua, from rank-bm25's BM25Okapi.

    pip install rank-bm25
    python tests/reference/make_rag_golden.py

The corpus mixes terms found in most chunks (negative idf, replaced by
epsilon * mean idf), repeated terms and an empty chunk. Tokens come from the
analyzer of moonforge.rag_bm25: lowercase, split on bytes other than ASCII
letters and digits, Lucene's English stop words dropped when asked.
"""
import json
import os
import re

from rank_bm25 import BM25Okapi

STOPWORDS = set(
    "a an and are as at be but by for if in into is it no not of on or such that the their then there "
    "these they this to was will with".split())

CORPUS = [
    "The printer on the third floor is out of toner.",
    "How do I reset my password? The reset link has expired.",
    "The VPN drops every hour; reconnecting the VPN client helps.",
    "Invoice #4411 was charged twice -- please refund the duplicate charge.",
    "My laptop battery drains in an hour. Is the battery covered by warranty?",
    "",
    "Password reset works, but the printer still asks for the old password.",
    "The the the printer printer.",
]
QUERIES = ["reset password", "printer toner", "the", "vpn hour battery", "refund of the charge", "nothing matches"]


def analyze(text, stopwords):
    terms = re.findall(rb"[a-z0-9\x80-\xff]+", text.lower().encode())
    return [t.decode() for t in terms if not (stopwords and t.decode() in STOPWORDS)]


def main():
    out = {"corpus": CORPUS, "queries": QUERIES}
    for stopwords in (False, True):
        bm = BM25Okapi([analyze(c, stopwords) for c in CORPUS])  # k1 = 1.5, b = 0.75, epsilon = 0.25
        key = "stopwords" if stopwords else "plain"
        out[key] = [list(map(float, bm.get_scores(analyze(q, stopwords)))) for q in QUERIES]
    path = os.path.join(os.path.dirname(__file__), "golden", "rag", "bm25.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
