"""Golden outputs of PEFT LoRA adapters on a tiny Llama.

The base is tests/reference/golden/models/llama_gqa (made by
make_model_golden.py). For each adapter below this writes
tests/reference/golden/lora/NAME/:
  adapter_config.json, adapter_model.safetensors   as PEFT's save_pretrained
                                                   writes them
  golden.safetensors   tokens, targets (already shifted, -100 = ignored,
                       with masked prompts), logits, loss, and
                       grad.<adapter parameter> for every lora_A and lora_B
                       (named as moonforge names them: PEFT's key without
                       "base_model.model." and ".default")

The adapter weights are set to seeded random values (B non-zero, so the
adapters change the outputs); dropout is 0 so the references are exact.

Requires: pip install torch transformers peft safetensors
Run from the repository root: python3 tests/reference/make_lora_golden.py
"""
import os

import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

BASE = os.path.join("tests", "reference", "golden", "models", "llama_gqa")
OUT = os.path.join("tests", "reference", "golden", "lora")
B, T = 2, 9

ADAPTERS = {
    "qvd": dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"]),
    "all_rslora": dict(r=4, lora_alpha=8, target_modules="all-linear", use_rslora=True),
}


def batch(vocab):
    tokens = torch.randint(3, vocab, (B, T), dtype=torch.int32)
    targets = torch.full((B, T), -100, dtype=torch.int32)
    targets[:, :-1] = tokens[:, 1:]
    targets[0, :4] = -100  # masked prompts of different lengths
    targets[1, :2] = -100
    return tokens, targets


def our_name(peft_name):
    return peft_name.removeprefix("base_model.model.").replace(".default", "")


def make(name, kwargs):
    torch.manual_seed(4321)
    base = AutoModelForCausalLM.from_pretrained(BASE, dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(lora_dropout=0.0, bias="none", task_type="CAUSAL_LM", **kwargs))
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if "lora_" in pname:
                p.normal_(0.0, 0.2)
    d = os.path.join(OUT, name)
    model.save_pretrained(d)
    os.remove(os.path.join(d, "README.md"))  # PEFT's model-card template

    tokens, targets = batch(base.config.vocab_size)
    logits = model(input_ids=tokens.long()).logits
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1).long(), ignore_index=-100)
    loss.backward()
    golden = {"tokens": tokens, "targets": targets, "logits": logits.detach().contiguous(),
              "loss": loss.detach().reshape(1)}
    for pname, p in model.named_parameters():
        if p.requires_grad:
            golden["grad." + our_name(pname)] = p.grad.detach().clone().contiguous()
    save_file(golden, os.path.join(d, "golden.safetensors"))
    print(name, "loss", loss.item(), "adapter tensors", len(golden) - 4)


if __name__ == "__main__":
    torch.use_deterministic_algorithms(True)
    for adapter_name, spec in ADAPTERS.items():
        make(adapter_name, spec)
