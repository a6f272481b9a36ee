#!/usr/bin/env python3
"""Golden values for mf.eval, from the reference packages:

  classify.json  synthetic model answers to label-classification prompts; the
                 expected parse (an independent regex implementation of the
                 rule in runner/lua/moonforge/eval.lua) and scikit-learn's
                 accuracy, per-class precision/recall/F1/support, macro-F1
                 (labels = the allowed ones, zero_division=0) and confusion
                 matrix.
  rouge_l.json   prediction/reference pairs and Google's rouge-score
                 (RougeScorer(["rougeL"], use_stemmer=False)) per pair and mean.

Run from the repository root:
  pip install scikit-learn rouge-score
  python3 tests/reference/make_eval_golden.py
"""
import json
import os
import random
import re

from rouge_score import rouge_scorer
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

OUT = os.path.join("tests", "reference", "golden", "eval")
INVALID = "invalid"

# A word character: ASCII letters, digits, underscore, and anything non-ASCII.
WORD = r"[A-Za-z0-9_\u0080-\U0010FFFF]"

LABEL_SETS = {
    "tickets": ["billing", "network outage", "network", "account access", "other"],
    "sentiment": ["positive", "negative", "neutral"],
    "sections": ["c++", "net", "python", "rust", "dotnet"],
}

TEMPLATES = [
    "{L}",
    "{U}",
    "Category: {L}.",
    "The answer is **{L}**",
    "label:{L}\n",
    "I think this is {L} rather than {M}.",
    "Not {M}; it is {L}.",  # the first mention wins, even when negated
    "({L})",
    "{L}/{M}",
    "'{U}'",
    "Catégorie : {L}",
    "Answer - {L}",
]
NOISE = [
    "I cannot tell.",
    "",
    "another thing entirely",
    "networking issue",
    "billings and accounts",
    "non-{L}_x",
    "{L}é",
    "x{L}",
    "python3 and rusty",
]


def ascii_lower(s):
    return "".join(chr(ord(c) + 32) if "A" <= c <= "Z" else c for c in s)


def parse(text, labels):
    """The earliest whole-word mention; the longer label at a tie."""
    low = ascii_lower(text)
    best = None
    for label in labels:
        needle = ascii_lower(label)
        pattern = re.escape(needle)
        if re.match(WORD, needle[0]):
            pattern = "(?<!" + WORD + ")" + pattern
        if re.match(WORD, needle[-1]):
            pattern = pattern + "(?!" + WORD + ")"
        m = re.search(pattern, low)
        if m and (best is None or (m.start(), -len(needle)) < (best[0], -len(best[1]))):
            best = (m.start(), needle, label)
    return best[2] if best else INVALID


def answer(rng, truth, labels):
    """A model-like answer: mostly right, sometimes another label or noise."""
    roll = rng.random()
    if roll < 0.12:
        other = rng.choice(labels)
        return rng.choice(NOISE).format(L=other)
    said = truth if roll < 0.75 else rng.choice(labels)
    other = rng.choice([l for l in labels if l != said])
    return rng.choice(TEMPLATES).format(L=said, U=said.upper(), M=other)


def classify_case(name, labels, n, rng, truth_labels=None):
    truths = [rng.choice(truth_labels or labels) for _ in range(n)]
    outputs = [answer(rng, t, labels) for t in truths]
    # References in any case: the metric matches them case-insensitively.
    refs = [t.upper() if rng.random() < 0.1 else t for t in truths]
    predicted = [parse(o, labels) for o in outputs]
    p, r, f, s = precision_recall_fscore_support(truths, predicted, labels=labels, zero_division=0)
    cm = confusion_matrix(truths, predicted, labels=labels + [INVALID])
    return {
        "name": name,
        "labels": labels,
        "outputs": outputs,
        "references": refs,
        "predicted": predicted,
        "accuracy": accuracy_score(truths, predicted),
        "macro_f1": f1_score(truths, predicted, labels=labels, average="macro", zero_division=0),
        "invalid": predicted.count(INVALID),
        "per_class": [{"label": l, "precision": float(p[k]), "recall": float(r[k]), "f1": float(f[k]),
                       "support": int(s[k])} for k, l in enumerate(labels)],
        "confusion": [[int(x) for x in row] for row in cm[: len(labels)].tolist()],
    }


WORDS = ("the a of model answer network billing outage reset password router refund 2024 v1 "
         "fast slow user account day 5k data error code").split()
DECOR = [",", ".", "!", " - ", "'s", "(", ")", ":", "\n", "  "]
UNUSUAL = ["İstanbul", "5\u212a run", "café", "naïve", "x_y", "e-mail", "ÀB", "straße", "C3PO", "don't", "ÇA"]


def sentence(rng, n):
    parts = []
    for _ in range(n):
        w = rng.choice(WORDS) if rng.random() > 0.08 else rng.choice(UNUSUAL)
        if rng.random() < 0.2:
            w = w.capitalize() if rng.random() < 0.5 else w.upper()
        parts.append(w + (rng.choice(DECOR) if rng.random() < 0.2 else " "))
    return "".join(parts).strip()


def rouge_cases(rng):
    pairs = [("", "something"), ("something", ""), ("", ""), ("!!! ...", "a b"), ("The cat", "the CAT"),
             ("İstanbul", "i stanbul"), ("5\u212a", "5k"), ("a b c d", "d c b a")]
    for _ in range(150):
        ref = sentence(rng, rng.randint(1, 25))
        words = ref.split()
        # A prediction that shares part of the reference, reordered and edited.
        pred = [w for w in words if rng.random() < 0.7]
        if pred and rng.random() < 0.3:
            i, j = rng.randrange(len(pred)), rng.randrange(len(pred))
            pred[i], pred[j] = pred[j], pred[i]
        pred += sentence(rng, rng.randint(0, 6)).split()
        pairs.append((" ".join(pred), ref))
    long_ref = sentence(rng, 600)
    long_pred = " ".join(w for w in long_ref.split() if rng.random() < 0.8) + " " + sentence(rng, 100)
    pairs.append((long_pred, long_ref))
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    items = []
    for pred, ref in pairs:
        s = scorer.score(ref, pred)["rougeL"]
        items.append({"prediction": pred, "reference": ref, "precision": s.precision, "recall": s.recall,
                      "fmeasure": s.fmeasure})
    n = len(items)
    return {"items": items, "precision": sum(i["precision"] for i in items) / n,
            "recall": sum(i["recall"] for i in items) / n, "fmeasure": sum(i["fmeasure"] for i in items) / n}


def write(name, value):
    with open(os.path.join(OUT, name), "w", encoding="utf-8") as f:
        json.dump(value, f, ensure_ascii=False, indent=1)
        f.write("\n")


def main():
    os.makedirs(OUT, exist_ok=True)
    rng = random.Random(20240611)
    cases = [
        classify_case("tickets", LABEL_SETS["tickets"], 300, rng),
        # "neutral" never true: its recall and F1 fall to zero_division.
        classify_case("sentiment", LABEL_SETS["sentiment"], 80, rng, ["positive", "negative"]),
        classify_case("sections", LABEL_SETS["sections"], 120, rng),
    ]
    write("classify.json", cases)
    write("rouge_l.json", rouge_cases(rng))


if __name__ == "__main__":
    main()
