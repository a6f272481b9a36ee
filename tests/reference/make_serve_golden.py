"""Golden sentence embeddings for the server's /v1/embeddings.

moonforge embeds a text as the mean over positions of the final normed
hidden states of a decoder; transformers' LlamaModel returns exactly those
states as last_hidden_state (its final RMSNorm applied). Writes
golden/serve/embeddings.json: for two token lists of the tiny llama_gqa
model, the ids and their mean-pooled embedding.

    python3 tests/reference/make_serve_golden.py
"""
import json
import os

import torch
from transformers import AutoModelForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))
MODEL = os.path.join(HERE, "golden", "models", "llama_gqa")
OUT = os.path.join(HERE, "golden", "serve", "embeddings.json")

INPUTS = [[1, 5, 9, 33, 2, 64, 17], [3, 3, 40, 12, 0, 66, 8, 21, 30, 4, 11]]


def main():
    model = AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.float32).eval()
    cases = []
    with torch.no_grad():
        for ids in INPUTS:
            hidden = model.model(torch.tensor([ids])).last_hidden_state[0]
            cases.append({"ids": ids, "embedding": hidden.mean(dim=0).tolist()})
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump({"model": "llama_gqa", "cases": cases}, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
