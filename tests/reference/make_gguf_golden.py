"""Golden files for moonforge's GGUF reader, block codecs and GGUF models.

    pip install gguf llama-cpp-python
    python tests/reference/make_gguf_golden.py            # both parts
    python tests/reference/make_gguf_golden.py --codecs   # the first only

1. tests/reference/golden/gguf/codecs.gguf, written by the reference
   `gguf` package: metadata of every value type (arrays of numbers and of
   strings included), and for each block type a tensor of blocks with the
   values the package's dequantize gives (NAME.expected, F32). Q8_0, Q4_0
   and Q4_1 blocks are quantized by the package from NAME.source; the
   K-quants, which it cannot quantize, are random bytes with sane scales.
2. tests/reference/golden/gguf/smollm2_llama_cpp.json: llama.cpp (through
   llama-cpp-python, the same GGUF file moonforge reads, fetched by
   datasets/smollm2/fetch.sh) tokenizing a text sample, its greedy
   continuations of a few prompts given as token ids (plain and chat
   formatted), and the top logits of the first step.
"""
import json
import os
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q
from gguf import quants

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
GOLDEN = os.path.join(ROOT, "tests", "reference", "golden", "gguf")
MODEL = os.path.join(ROOT, "datasets", "cache", "smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")


def random_k_blocks(rng, qtype, nblocks):
    """Random K-quant super-blocks whose f16 scales are small finite numbers."""
    size = gguf.GGML_QUANT_SIZES[qtype][1]
    raw = rng.integers(0, 256, size=(nblocks, size), dtype=np.uint8)
    scales = rng.uniform(0.001, 0.05, size=(nblocks, 2)).astype(np.float16).view(np.uint8)
    if qtype == Q.Q4_K:       # d, dmin lead the block
        raw[:, 0:4] = scales.reshape(nblocks, 4)
    else:                     # Q6_K: d ends the block
        raw[:, -2:] = scales.reshape(nblocks, 4)[:, :2]
    return raw


def make_codecs():
    rng = np.random.default_rng(20240607)
    w = gguf.GGUFWriter(os.path.join(GOLDEN, "codecs.gguf"), "llama")
    w.add_uint8("test.u8", 200)
    w.add_int8("test.i8", -100)
    w.add_uint16("test.u16", 60000)
    w.add_int16("test.i16", -30000)
    w.add_uint32("test.u32", 4000000000)
    w.add_int32("test.i32", -2000000000)
    w.add_float32("test.f32", 0.15625)
    w.add_bool("test.bool", True)
    w.add_string("test.string", "héllo wörld")
    w.add_uint64("test.u64", 2**40 + 3)
    w.add_int64("test.i64", -(2**40) - 3)
    w.add_float64("test.f64", 2.718281828459045)
    w.add_array("test.arr_i32", [1, -2, 3, -4])
    w.add_array("test.arr_f32", [0.5, -1.25])
    w.add_array("test.arr_str", ["alpha", "", "γάμμα"])
    for qtype in (Q.Q8_0, Q.Q4_0, Q.Q4_1):
        name = qtype.name.lower()
        source = rng.standard_normal((3, 64)).astype(np.float32)
        source[2] = 0  # an all-zero block has scale 0
        blocks = quants.quantize(source, qtype)
        w.add_tensor(name + ".source", source)
        w.add_tensor(name, blocks, raw_dtype=qtype)
        w.add_tensor(name + ".expected", quants.dequantize(blocks, qtype).astype(np.float32))
    for qtype in (Q.Q4_K, Q.Q6_K):
        name = qtype.name.lower()
        blocks = random_k_blocks(rng, qtype, 2).reshape(1, -1)
        w.add_tensor(name, blocks, raw_dtype=qtype)
        w.add_tensor(name + ".expected", quants.dequantize(blocks, qtype).astype(np.float32))
    source = (rng.standard_normal((2, 8)) * 100).astype(np.float32)
    w.add_tensor("f16", source.astype(np.float16))
    w.add_tensor("f16.expected", source.astype(np.float16).astype(np.float32))
    bf16 = quants.quantize(source, Q.BF16)
    w.add_tensor("bf16", bf16, raw_dtype=Q.BF16)
    w.add_tensor("bf16.expected", quants.dequantize(bf16, Q.BF16).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


TEXT = "The quick brown fox jumps over the lazy dog. Llamas eat grass; 42 is 6*7!"
PROMPTS = ["The capital of France is", "Here is a short poem about the sea:\n"]
CHAT = ["What is the boiling point of water in Celsius?", "Name three primary colors."]


def chat_text(question):
    return ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
            "<|im_end|>\n<|im_start|>user\n" + question + "<|im_end|>\n<|im_start|>assistant\n")


def make_llama_cpp():
    from llama_cpp import Llama
    llm = Llama(model_path=MODEL, n_ctx=512, n_threads=2, logits_all=True, verbose=False, seed=0)

    def tokenize(text, special=False):
        return llm.tokenize(text.encode(), add_bos=False, special=special)

    def greedy(ids, n=24):
        llm.reset()
        llm.eval(ids)
        first = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float64)
        out = []
        for _ in range(n):
            logits = np.array(llm.scores[llm.n_tokens - 1])
            tok = int(np.argmax(logits))
            out.append(tok)
            llm.eval([tok])
        top = np.argsort(-first, kind="stable")[:10]
        return out, [[int(i), round(float(first[i]), 5)] for i in top]

    cases = []
    for text in PROMPTS:
        ids = tokenize(text)
        out, top = greedy(ids)
        cases.append({"kind": "plain", "text": text, "prompt": ids, "greedy": out, "top_logits": top})
    for q in CHAT:
        ids = tokenize(chat_text(q), special=True)
        out, top = greedy(ids)
        cases.append({"kind": "chat", "text": chat_text(q), "prompt": ids, "greedy": out, "top_logits": top})
    golden = {"model": "SmolLM2-135M-Instruct.Q4_1.gguf",
              "text": TEXT, "text_ids": tokenize(TEXT), "cases": cases}
    with open(os.path.join(GOLDEN, "smollm2_llama_cpp.json"), "w") as f:
        json.dump(golden, f, indent=1, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    os.makedirs(GOLDEN, exist_ok=True)
    make_codecs()
    if "--codecs" not in sys.argv:
        make_llama_cpp()
