"""Greedy decoding speed of llama.cpp (llama-cpp-python) on a GGUF file:
the same prompt ids and token count as bench/decode/decode.lua, timed the
same way (prefill included, after a warm-up), as one JSON line.

    python bench/decode/llama_cpp_decode.py MODEL.gguf THREADS "1 2 3" TOKENS
"""
import json
import sys
import time

import numpy as np
from llama_cpp import Llama


def greedy(llm, prompt, n):
    llm.reset()
    llm.eval(prompt)
    out = []
    for _ in range(n):
        tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        out.append(tok)
        llm.eval([tok])
    return out


def main():
    path, threads, prompt_text, tokens = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    prompt = [int(t) for t in prompt_text.split()]
    llm = Llama(model_path=path, n_ctx=512, n_threads=threads, n_threads_batch=threads, n_batch=512, logits_all=True,
                verbose=False)
    greedy(llm, prompt, 4)
    t0 = time.perf_counter()
    out = greedy(llm, prompt, tokens)
    dt = time.perf_counter() - t0
    print(json.dumps({"tokens": len(out), "seconds": dt, "tokens_per_s": len(out) / dt, "ids": out}))


if __name__ == "__main__":
    main()
