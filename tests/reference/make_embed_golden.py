"""Golden files for sentence embeddings (tests/lua/test_embed*.lua).

Run from the repository root after datasets/minilm/fetch.sh:
    python3 tests/reference/make_embed_golden.py
Needs torch, transformers, tokenizers and sentence-transformers (pip).

Writes into tests/reference/golden/embed/:
- minilm.json: varied sentences, their ids from HF tokenizers (no
  truncation) and their all-MiniLM-L6-v2 embeddings from
  sentence-transformers (normalised, as the model's modules say);
- tiny-bert/: a BertModel with a tiny random config (save_pretrained), a
  WordPiece tokenizer.json over a small vocabulary, and sentence-transformers'
  module files (mean pooling, max_seq_length 16);
- tiny.json: for the tiny model, the last hidden states of a padded batch
  of ids, sentence-transformers' embeddings (mean pooling, normalised) and
  the normalised [CLS] states (CLS pooling), and tokenizer ids.
"""
import json
import os

import torch
from sentence_transformers import SentenceTransformer
from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
from tokenizers.models import WordPiece
from transformers import BertConfig, BertModel

OUT = "tests/reference/golden/embed"
MINILM = "datasets/cache/minilm/all-MiniLM-L6-v2"

SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The new movie is awesome.",
    "The cat sits outside.",
    "A man is playing guitar.",
    "How do I reset my password?",
    "Invoices are sent on the first business day of each month.",
    "Café naïve résumé — ÉCOLE NORMALE",
    "北京是中国的首都。",
    "Ελληνικά και русский текст",
    "한국어 텍스트 예시",
    "emoji 🙂 and symbols #1 $2.50 & 100%",
    "  multiple   spaces\tand\nnewlines  ",
    "antidisestablishmentarianism unaffable",
    "Error: connection refused (errno 111) at 10.0.0.1:8080",
    "def f(x): return x ** 2",
    "Hi",
    "",
    "The quick brown fox jumps over the lazy dog. " * 40,
    "Retrieval-augmented generation cites its sources.",
]

TINY_TEXTS = ["the cat sat on the mat.", "The dog ran, quickly!", "Résumé of unknownwords", "cats and dogs", "x"]


def rounded(values):
    return [float(f"{v:.8g}") for v in values]


def minilm_golden():
    tok = Tokenizer.from_file(f"{MINILM}/tokenizer.json")
    tok.no_truncation()
    tok.no_padding()
    model = SentenceTransformer(MINILM, device="cpu")
    emb = model.encode(SENTENCES, batch_size=32, convert_to_numpy=True)
    return {
        "model": "all-MiniLM-L6-v2",
        "max_seq_length": model.max_seq_length,
        "texts": SENTENCES,
        "ids": [tok.encode(s).ids for s in SENTENCES],
        "embeddings": [rounded(row) for row in emb.tolist()],
    }


def tiny_vocab():
    words = "the cat sat on mat dog ran quick ##ly and s ##s ##ed res ##ume of un ##known word".split()
    chars = list("abcdefghijklmnopqrstuvwxyz.,!")
    return ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words + chars + ["##" + c for c in "abcdefghijklmnopqrstuvwxyz"]


def make_tiny(dirname):
    vocab = {t: i for i, t in enumerate(dict.fromkeys(tiny_vocab()))}
    tok = Tokenizer(WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    for special in ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]:
        tok.add_special_tokens([special])
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=24, type_vocab_size=2)
    model = BertModel(cfg, add_pooling_layer=False).eval()
    with torch.no_grad():  # larger than the 0.02 init, so that the layers do visible work
        for p in model.parameters():
            p.mul_(10.0 if p.dim() > 1 else 1.0)
    os.makedirs(f"{dirname}/1_Pooling", exist_ok=True)
    model.save_pretrained(dirname)
    tok.save(f"{dirname}/tokenizer.json")
    with open(f"{dirname}/modules.json", "w") as f:
        json.dump([{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                   {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
                   {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}],
                  f, indent=2)
    with open(f"{dirname}/1_Pooling/config.json", "w") as f:
        json.dump({"word_embedding_dimension": 16, "pooling_mode_cls_token": False,
                   "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": False,
                   "pooling_mode_mean_sqrt_len_tokens": False}, f, indent=2)
    with open(f"{dirname}/sentence_bert_config.json", "w") as f:
        json.dump({"max_seq_length": 16, "do_lower_case": False}, f, indent=2)
    return model, tok


def tiny_golden(dirname):
    model, tok = make_tiny(dirname)
    ids = [[2, 5, 6, 7, 8, 5, 3], [2, 9, 10, 3, 0, 0, 0]]
    lens = [7, 4]
    mask = torch.tensor([[1] * n + [0] * (7 - n) for n in lens])
    with torch.no_grad():
        hidden = model(input_ids=torch.tensor(ids), attention_mask=mask).last_hidden_state
    st = SentenceTransformer(dirname, device="cpu")
    mean = st.encode(TINY_TEXTS, convert_to_numpy=True)
    features = st.tokenize(TINY_TEXTS)
    with torch.no_grad():
        states = model(input_ids=features["input_ids"], attention_mask=features["attention_mask"]).last_hidden_state
    cls = torch.nn.functional.normalize(states[:, 0], dim=-1)
    return {
        "ids": ids, "lens": lens,
        "hidden": [[rounded(row) for row in seq[:n]] for seq, n in zip(hidden.tolist(), lens)],
        "texts": TINY_TEXTS,
        "text_ids": [tok.encode(t).ids for t in TINY_TEXTS],
        "mean_embeddings": [rounded(r) for r in mean.tolist()],
        "cls_embeddings": [rounded(r) for r in cls.tolist()],
    }


def main():
    os.makedirs(OUT, exist_ok=True)
    with open(f"{OUT}/tiny.json", "w") as f:
        json.dump(tiny_golden(f"{OUT}/tiny-bert"), f)
    with open(f"{OUT}/minilm.json", "w") as f:
        json.dump(minilm_golden(), f)


if __name__ == "__main__":
    main()
