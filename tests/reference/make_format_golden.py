"""Writes the reference files for the tensor-format tests (tests/c/test_npy.c,
test_safetensors.c, test_tensor.c) into tests/reference/golden/formats/.

Everything here is written by the reference libraries (numpy, torch,
safetensors), and expected.json records what the files hold as raw element
bit patterns, so the C tests compare exactly, NaN and -0 included.

The config_*.json files hold only the keys in which a transformers
configuration differs from that class's defaults, so the C test checks our
defaults against theirs.

    python3 tests/reference/make_format_golden.py
    (needs numpy, torch, safetensors and transformers)
"""
import json
import os

import numpy as np
import torch
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden", "formats")

# Values that exercise rounding: ties, subnormals, overflow, signed zero,
# infinities and NaN; F32 holds them exactly.
EDGE = [0.0, -0.0, 1.0, -1.0, 0.1, 1 / 3, 65504.0, 65519.0, 65520.0, 1e6, -1e6,
        2.0 ** -14, 2.0 ** -24, 2.0 ** -25, 1.5 * 2.0 ** -25, 2.0 ** -26, 3 * 2.0 ** -25,
        1e-40, -1e-45, 3.3895314e38, 3.4028235e38, 1.00048828125, 1.00146484375,
        1.0 + 2.0 ** -8, 1.0 + 3 * 2.0 ** -8, 1.0 + 2.0 ** -8 + 2.0 ** -20,
        float("inf"), float("-inf"), float("nan")]


def bits(t):
    """Raw little-endian element patterns of a tensor as a flat list of ints."""
    width = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()]
    raw = t.contiguous().view(width).flatten().tolist()
    mask = (1 << (8 * t.element_size())) - 1
    return [v & mask if width is not torch.int64 else v for v in raw]


def describe(t):
    names = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
             torch.int32: "I32", torch.int64: "I64", torch.uint8: "U8"}
    return {"dtype": names[t.dtype], "shape": list(t.shape), "bits": bits(t)}


def tiny_tensors():
    g = torch.Generator().manual_seed(7)
    return {
        "weight": torch.randn(2, 3, generator=g),
        "half": torch.tensor(EDGE[:9], dtype=torch.float32).to(torch.float16),
        "brain": torch.tensor([1.0, -2.5, 3.140625, 1e-39], dtype=torch.bfloat16),
        "ids": torch.tensor([0, -1, 2 ** 40, -(2 ** 62)], dtype=torch.int64),
        "count": torch.tensor([7, -8], dtype=torch.int32),
        "bytes": torch.tensor([0, 1, 255], dtype=torch.uint8),
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 3),
    }


def write_safetensors(expected):
    tensors = tiny_tensors()
    save_file(tensors, os.path.join(OUT, "tiny.safetensors"), metadata={"format": "pt"})
    expected["tiny.safetensors"] = {name: describe(t) for name, t in tensors.items()}

    shard_dir = os.path.join(OUT, "sharded")
    os.makedirs(shard_dir, exist_ok=True)
    g = torch.Generator().manual_seed(11)
    shards = {
        "model-00001-of-00002.safetensors": {"embed.weight": torch.randn(4, 2, generator=g)},
        "model-00002-of-00002.safetensors": {"norm.weight": torch.randn(2, generator=g).to(torch.bfloat16),
                                             "head.weight": torch.randn(3, 2, generator=g)},
    }
    weight_map = {}
    for file, ts in shards.items():
        save_file(ts, os.path.join(shard_dir, file), metadata={"format": "pt"})
        weight_map.update({name: file for name in ts})
    with open(os.path.join(shard_dir, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": 36}, "weight_map": weight_map}, f, indent=2, sort_keys=True)
    expected["sharded"] = {name: describe(t) for ts in shards.values() for name, t in ts.items()}


def write_npy(expected):
    arrays = {
        "f4.npy": np.arange(6, dtype="<f4").reshape(2, 3) / 7,
        "f2.npy": np.array(EDGE[:10], dtype="<f4").astype("<f2"),
        "i8.npy": np.array([[1, -2], [2 ** 50, -(2 ** 60)]], dtype="<i8"),
        "i4.npy": np.array([[[1], [2]], [[-3], [2 ** 31 - 1]]], dtype="<i4"),
        "u1.npy": np.array([0, 128, 255], dtype="|u1"),
        "scalar.npy": np.array(1.25, dtype="<f4"),
    }
    for name, a in arrays.items():
        np.save(os.path.join(OUT, name), a)
    # Format 2.0 (4-byte header length): numpy writes it only when asked.
    arrays["v2.npy"] = np.array([[0.5, -1.5, 3.0]], dtype="<f4")
    with open(os.path.join(OUT, "v2.npy"), "wb") as f:
        np.lib.format.write_array(f, arrays["v2.npy"], version=(2, 0))
    expected["npy"] = {name: describe(torch.from_numpy(a.copy())) for name, a in arrays.items()}


def write_conversions(expected):
    # Edge values plus random bit patterns over the whole float range.
    rng = np.random.default_rng(3)
    patterns = rng.integers(0, 2 ** 32, size=160, dtype=np.uint64).astype(np.uint32)
    f32 = torch.cat([torch.tensor(EDGE, dtype=torch.float32),
                     torch.from_numpy(patterns.view(np.float32).copy())])
    expected["conversions"] = {
        "f32": bits(f32),
        "f16": bits(f32.to(torch.float16)),
        "bf16": bits(f32.to(torch.bfloat16)),
    }


def write_configs(expected):
    from transformers import LlamaConfig, MistralConfig, Qwen2Config

    small = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4)
    configs = {
        "llama": LlamaConfig(**small, num_key_value_heads=2, tie_word_embeddings=True, rms_norm_eps=1e-5),
        "mistral": MistralConfig(**small, num_key_value_heads=2),
        "qwen2": Qwen2Config(**small, num_key_value_heads=2, rope_theta=1000000.0, eos_token_id=[5, 6]),
    }
    expected["configs"] = {}
    for arch, cfg in configs.items():
        full, default = cfg.to_dict(), type(cfg)().to_dict()
        diff = {k: v for k, v in full.items() if k == "model_type" or default.get(k) != v}
        diff.pop("transformers_version", None)
        with open(os.path.join(OUT, "config_%s.json" % arch), "w") as f:
            json.dump(diff, f, indent=2, sort_keys=True)
            f.write("\n")
        eos = cfg.eos_token_id[0] if isinstance(cfg.eos_token_id, list) else cfg.eos_token_id
        expected["configs"][arch] = {
            "vocab_size": cfg.vocab_size, "hidden_size": cfg.hidden_size,
            "intermediate_size": cfg.intermediate_size, "num_hidden_layers": cfg.num_hidden_layers,
            "num_attention_heads": cfg.num_attention_heads, "num_key_value_heads": cfg.num_key_value_heads,
            "head_dim": getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads,
            "max_position_embeddings": cfg.max_position_embeddings, "rms_norm_eps": cfg.rms_norm_eps,
            "rope_theta": cfg.rope_parameters["rope_theta"], "tie_word_embeddings": cfg.tie_word_embeddings,
            "attention_bias": getattr(cfg, "attention_bias", arch == "qwen2"),
            "bos_token_id": -1 if cfg.bos_token_id is None else cfg.bos_token_id,
            "eos_token_id": -1 if eos is None else eos,
        }


def main():
    np.seterr(over="ignore")  # 65520 and 1e6 become infinity in f16, as intended
    os.makedirs(OUT, exist_ok=True)
    expected = {}
    write_safetensors(expected)
    write_npy(expected)
    write_conversions(expected)
    write_configs(expected)
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
