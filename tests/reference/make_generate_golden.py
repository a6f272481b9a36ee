"""Golden ids of greedy generation with a repetition penalty, from transformers.

For each tiny model of tests/reference/golden/models/ (made by
make_model_golden.py) and each penalty, generate() continues two prompts
greedily with repetition_penalty set and eos ignored. Written to
tests/reference/golden/generate/repetition.json as
  {model: [{"prompt": [...], "penalty": p, "ids": [...new ids...]}, ...]}

Requires: pip install torch transformers
Run from the repository root: python3 tests/reference/make_generate_golden.py
"""
import json
import os

import torch
from transformers import AutoModelForCausalLM

MODELS = os.path.join("tests", "reference", "golden", "models")
OUT = os.path.join("tests", "reference", "golden", "generate", "repetition.json")
PENALTIES = [1.5, 0.7, 4.0]
NEW_TOKENS = 12


def prompts(vocab):
    g = torch.Generator().manual_seed(7)
    # a short prompt, and a longer one that repeats itself
    short = torch.randint(5, vocab, (4,), generator=g).tolist()
    half = torch.randint(5, vocab, (5,), generator=g).tolist()
    return [short, half + half]


def main():
    golden = {}
    for name in sorted(os.listdir(MODELS)):
        model = AutoModelForCausalLM.from_pretrained(os.path.join(MODELS, name), dtype=torch.float32)
        cases = []
        for prompt in prompts(model.config.vocab_size):
            for penalty in PENALTIES:
                with torch.no_grad():
                    out = model.generate(torch.tensor([prompt]), max_new_tokens=NEW_TOKENS, do_sample=False,
                                         repetition_penalty=penalty, eos_token_id=None, pad_token_id=0)
                cases.append({"prompt": prompt, "penalty": penalty, "ids": out[0, len(prompt):].tolist()})
        golden[name] = cases
    with open(OUT, "w") as f:  # one case per line
        f.write("{\n" + ",\n".join(
            json.dumps(name) + ": [\n  " + ",\n  ".join(json.dumps(c) for c in cases) + "\n]"
            for name, cases in golden.items()) + "\n}\n")
    print("wrote", OUT)


if __name__ == "__main__":
    main()
