"""Writes the reference files for the tokenizer tests (tests/lua/test_tokenizer*.lua)
into tests/reference/golden/tokenizers/.

1. Small tokenizers in each family's style, trained with HF `tokenizers` on
   corpus.txt (public-domain King James Bible text plus a little code):
     gpt2      ByteLevel pre-tokenizer (GPT-2 regex)
     llama3    Split(Llama 3 regex) + ByteLevel, ignore_merges, <|begin_of_text|> prefix
     qwen2     the llama3 vocabulary with Qwen2's split regex
     smollm    Digits(individual) + ByteLevel, ChatML specials, a non-special added token
     spm       Llama 2 style: Prepend/Replace normalizer, BPE with byte fallback, <s> prefix
     metaspace Mistral style: the spm vocabulary behind a Metaspace pre-tokenizer
   Each is saved as <name>.json (a tokenizer.json) and encoded over TEXTS.
2. The SmolLM2 GGUF tokenizer (when the file is present), converted by
   transformers from the GGUF. transformers has no "smollm" entry for
   tokenizer.ggml.pre and falls back to plain GPT-2 splitting; SmolLM2's
   published tokenizer.json (and llama.cpp) split digits one by one first, so
   that pre-tokenizer is put back before encoding.
3. Training: HF's BpeTrainer on corpus.txt (byte-level, GPT-2 pre-tokenizer,
   all 256 bytes in the alphabet) as trained_hf.json, the reference for
   moonforge's trainer. With MOONFORGE set to the built binary, moonforge
   trains the same vocabulary, HF loads the tokenizer.json it wrote and
   encodes TEXTS: trained_ids.json.

    python3 tests/reference/make_tokenizer_golden.py
    (needs tokenizers, transformers and gguf; MOONFORGE=build/moonforge for step 3)
"""
import json
import os
import subprocess
import tempfile

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
OUT = os.path.join(HERE, "golden", "tokenizers")
CORPUS = os.path.join(OUT, "corpus.txt")
GGUF = os.path.join(ROOT, "datasets", "cache", "smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")

LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
               r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

TEXTS = [
    "",
    "Hello world",
    "In the beginning God created the heaven and the earth.",
    "  leading spaces, trailing spaces   ",
    "tabs\tand\t\ttabs\nnew\n\nlines\n\n\n",
    "Windows line\r\nendings\r\n\r\n",
    "numbers: 0 7 42 1234567 3.14159 -12,345.67 1e-9 ٣٤٥ ² ½",
    "code: def f(x):\n    return x ** 2  # square\n\tif (a && b) { c[i] = d->e; }",
    "I'm sure it's fine, we'll see. THEY'RE HERE! She'S ok'd. ſ's",
    "emoji 😀👍🏽 family 👨‍👩‍👧 flags 🇫🇷",
    "CJK 你好，世界！日本語のテキスト。한국어 텍스트",
    "accents: café naïve résumé Ærøskøbing Ångström",
    "combining: cafe\u0301 n\u0303 a\u0308\u0304 Z\u0335\u0321a\u0336l\u0337g\u0334o",
    "odd spaces: a\u00a0b\u3000c\u2009d\u200be\u2028f\u0085g\u202fh\u205fi\u1680j",
    "zero width:\u200b\u200c\u200d\ufeffx",
    "specials in text: <|endoftext|> <|im_start|>user <s> </s> <|begin_of_text|>",
    "added token <think>inside</think> and<think>glued",
    "mixed\u00a0 \u00a0spaces \n \n  \t\n",
    "punctuation!!! ??? ... --- ''' \"\"\" ((( ))) @@@ ### $$$",
    "URL https://example.com/path?q=1&r=two#frag and mail a.b@c.org",
    "Ελληνικά и русский текст, עברית, العربية, हिन्दी",
    "   ",
    "\n",
    "x" * 300,
    "The LORD is my shepherd; I shall not want. 23:1-6",
]


def corpus():
    """The first 40 KB of the KJV corpus (if present) and some code and numbers; committed."""
    if os.path.exists(CORPUS):
        return
    src = os.path.join(ROOT, "datasets", "cache", "pretrain_corpus", "train.txt")
    with open(src, encoding="utf-8") as f:
        text = f.read(40000)
    text = text[: text.rfind(". ") + 1].replace(". And", ".\nAnd")
    extra = "\n".join([
        "def add(a, b):\n    return a + b\n",
        "for (int i = 0; i < 10; i++) { sum += i * 2; }\n",
        "Prices: 12.50, 1999, 2024-01-15, 3.14159, 100%\n",
        "I'm, you're, it's, we'll, they've, I'd.\n",
    ])
    with open(CORPUS, "w", encoding="utf-8") as f:
        f.write(text + "\n" + extra)


def train(tok, vocab_size, specials, byte_level=True):
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet() if byte_level else [],
                                  show_progress=False)
    tok.train([CORPUS], trainer)
    return tok


def byte_level(pre, specials, **bpe):
    tok = Tokenizer(models.BPE(**bpe))
    tok.pre_tokenizer = pre
    tok.decoder = decoders.ByteLevel()
    return train(tok, 1000, specials)


def make_gpt2():
    return byte_level(pre_tokenizers.ByteLevel(add_prefix_space=False), ["<|endoftext|>"])


def make_llama3():
    pre = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated"),
                                   pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    tok = byte_level(pre, specials, ignore_merges=True)
    tok.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", 0)])
    return tok


def make_qwen2(llama3):
    tok = Tokenizer.from_str(llama3.to_str())
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.post_processor = None
    return tok


def make_smollm():
    pre = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                   pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tok = byte_level(pre, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    tok.add_tokens(["<think>", "</think>"])
    return tok


def make_spm():
    """Llama 2's layout: <unk> <s> </s>, then the 256 <0xXX> byte tokens (plain
    vocabulary entries, not added tokens), then the trained pieces."""
    tok = Tokenizer(models.BPE(byte_fallback=True, fuse_unk=True, unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    byte_tokens = ["<0x%02X>" % b for b in range(256)]
    train(tok, 1000, ["<unk>", "<s>", "</s>"] + byte_tokens, byte_level=False)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    spec = json.loads(tok.to_str())
    spec["added_tokens"] = [t for t in spec["added_tokens"] if t["content"] in ("<unk>", "<s>", "</s>")]
    return Tokenizer.from_str(json.dumps(spec))


def make_metaspace(spm):
    tok = Tokenizer.from_str(spm.to_str())
    tok.normalizer = None
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first", split=False)
    tok.decoder = decoders.Sequence([decoders.Metaspace(replacement="\u2581", prepend_scheme="first", split=False),
                                     decoders.ByteFallback(), decoders.Fuse()])
    return tok


def encodings(tok):
    """Per text: ids with text as data, ids with specials parsed and added, and decodes."""
    rows = []
    for text in TEXTS:
        tok.encode_special_tokens = True
        plain = tok.encode(text, add_special_tokens=False).ids
        tok.encode_special_tokens = False
        special = tok.encode(text, add_special_tokens=True).ids
        rows.append({"text": text, "ids": plain, "ids_special": special,
                     "decoded": tok.decode(special, skip_special_tokens=False),
                     "decoded_skip": tok.decode(special, skip_special_tokens=True)})
    return rows


def write_json(name, value):
    with open(os.path.join(OUT, name), "w", encoding="utf-8") as f:
        json.dump(value, f, ensure_ascii=False, separators=(",", ":"))
    print("wrote", name, os.path.getsize(os.path.join(OUT, name)), "bytes")


def gguf_golden():
    from transformers import AutoTokenizer
    if not os.path.exists(GGUF):
        print("no", GGUF, "- skipping the SmolLM2 golden")
        return
    hf = AutoTokenizer.from_pretrained(os.path.dirname(GGUF), gguf_file=os.path.basename(GGUF))
    tok = hf.backend_tokenizer
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False)])
    rows = encodings(tok)
    chat = hf.apply_chat_template([{"role": "user", "content": "Hi there"}], tokenize=False,
                                  add_generation_prompt=True)
    write_json("smollm2_gguf_ids.json", {"vocab_size": tok.get_vocab_size(), "bos_id": hf.bos_token_id,
                                         "eos_id": hf.eos_token_id, "chat_example": chat, "rows": rows})


def trained_golden():
    hf = byte_level(pre_tokenizers.ByteLevel(add_prefix_space=False), ["<|endoftext|>", "<pad>"])
    spec = json.loads(hf.to_str())
    write_json("trained_hf.json", {"vocab": spec["model"]["vocab"], "merges": spec["model"]["merges"]})
    binary = os.environ.get("MOONFORGE")
    if not binary:
        print("MOONFORGE not set - skipping trained_ids.json")
        return
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "tokenizer.json")
        script = os.path.join(tmp, "train.lua")
        with open(script, "w") as f:
            f.write('require("moonforge").tokenizer.train{files = {%s}, vocab_size = 1000, min_frequency = 2, '
                    'special_tokens = {"<|endoftext|>", "<pad>"}, output = %s}\n' % (json.dumps(CORPUS), json.dumps(out)))
        subprocess.run([binary, "exec", script], check=True)
        tok = Tokenizer.from_file(out)
        write_json("trained_ids.json", encodings(tok))


def main():
    os.makedirs(OUT, exist_ok=True)
    corpus()
    llama3 = make_llama3()
    spm = make_spm()
    made = {"gpt2": make_gpt2(), "llama3": llama3, "qwen2": make_qwen2(llama3), "smollm": make_smollm(),
            "spm": spm, "metaspace": make_metaspace(spm)}
    for name, tok in made.items():
        tok.save(os.path.join(OUT, name + ".json"))
        write_json(name + "_ids.json", encodings(tok))
    write_json("texts.json", TEXTS)
    gguf_golden()
    trained_golden()


if __name__ == "__main__":
    main()
