"""Golden outputs of tiny Llama-family models from transformers.

For each model this writes tests/reference/golden/models/NAME/:
  config.json, model.safetensors   the model as save_pretrained writes it
  golden.safetensors               tokens, targets (already shifted, -100 =
                                   ignored), logits, loss, grad.<param name>
                                   for every parameter, adamw_losses (loss
                                   before AdamW step 1, then after each of
                                   10 steps) and greedy (8 new ids for the
                                   prompt tokens[0, :5])

The weights are stored in the dtype named below; the references are computed
by a float32 model that transformers loads back from the saved folder, so a
loader that widens F16/BF16 to F32 must reproduce them.

Requires: pip install torch transformers safetensors
Run from the repository root: python3 tests/reference/make_model_golden.py
"""
import os

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import (AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, Qwen2Config,
                          Qwen2ForCausalLM)

OUT = os.path.join("tests", "reference", "golden", "models")
B, T = 2, 9

MODELS = {
    # Llama with grouped-query attention and an untied LM head.
    "llama_gqa": (LlamaConfig, LlamaForCausalLM, torch.float32, dict(
        vocab_size=67, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, rope_theta=10000.0, rms_norm_eps=1e-5,
        max_position_embeddings=64, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)),
    # SmolLM-style: tied embeddings, one KV head shared by three query heads.
    "smollm_tied": (LlamaConfig, LlamaForCausalLM, torch.bfloat16, dict(
        vocab_size=53, hidden_size=24, intermediate_size=40, num_hidden_layers=2,
        num_attention_heads=3, num_key_value_heads=1, rope_theta=10000.0, rms_norm_eps=1e-5,
        max_position_embeddings=32, tie_word_embeddings=True, bos_token_id=0, eos_token_id=0)),
    # Qwen2: bias on the q, k, v projections.
    "qwen2_bias": (Qwen2Config, Qwen2ForCausalLM, torch.float16, dict(
        vocab_size=61, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, rope_theta=10000.0, rms_norm_eps=1e-6,
        max_position_embeddings=32, tie_word_embeddings=False, bos_token_id=3, eos_token_id=4)),
}


def batch(vocab):
    tokens = torch.randint(5, vocab, (B, T), dtype=torch.int32)
    targets = torch.full((B, T), -100, dtype=torch.int32)
    targets[:, :-1] = tokens[:, 1:]
    targets[0, :3] = -100  # a masked prompt
    return tokens, targets


def loss_of(model, tokens, targets):
    logits = model(input_ids=tokens.long()).logits
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1).long(),
                           ignore_index=-100)
    return logits, loss


def make(name, config_class, model_class, dtype, kwargs):
    torch.manual_seed(1234)
    config = config_class(**kwargs)
    model = model_class(config)
    with torch.no_grad():
        # HF initialises norms to one and biases to zero; perturb them so that
        # the test sees whether they are applied.
        for pname, p in model.named_parameters():
            if pname.endswith("norm.weight"):
                p.add_(0.1 * torch.randn_like(p))
            elif pname.endswith(".bias"):
                p.normal_(0.0, 0.05)
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    model.to(dtype).save_pretrained(d, safe_serialization=True)
    model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32)

    tokens, targets = batch(config.vocab_size)
    logits, loss = loss_of(model, tokens, targets)
    loss.backward()
    golden = {"tokens": tokens, "targets": targets, "logits": logits.detach().contiguous(),
              "loss": loss.detach().reshape(1)}
    for pname, p in model.named_parameters():
        golden["grad." + pname] = p.grad.detach().clone().contiguous()
    model.zero_grad()

    with torch.no_grad():
        prompt = tokens[:1, :5].long()
        out = model.generate(prompt, max_new_tokens=8, do_sample=False, eos_token_id=None,
                             pad_token_id=0)
        golden["greedy"] = out[0, 5:].to(torch.int32).contiguous()

    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.01)
    losses = []
    for _ in range(10):
        opt.zero_grad()
        _, loss = loss_of(model, tokens, targets)
        losses.append(loss.item())
        loss.backward()
        opt.step()
    with torch.no_grad():
        losses.append(loss_of(model, tokens, targets)[1].item())
    golden["adamw_losses"] = torch.tensor(losses, dtype=torch.float32)
    save_file(golden, os.path.join(d, "golden.safetensors"))
    print(name, "loss", golden["loss"].item(), "after adamw", losses[-1])


if __name__ == "__main__":
    torch.use_deterministic_algorithms(True)
    for model_name, spec in MODELS.items():
        make(model_name, *spec)
