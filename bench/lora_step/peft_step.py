"""The PyTorch side of bench/lora_step: LoRA fine-tuning steps with
transformers + PEFT on the same GGUF model (transformers dequantizes it to
f32, or to bf16 with --dtype bf16; PEFT keeps the adapters in f32), the
same adapters (r 8, alpha 16, dropout 0.05, all linear layers), the same
batch and AdamW on the adapters. Speaks lora_step.lua's protocol: "ready"
after four warm-up steps, then one timed step per line read, answered with
"step SECONDS LOSS", and tokens_per_s over them at the end of input.

Requires: pip install torch transformers peft gguf
"""
import argparse
import os
import sys
import time

import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dtype", choices=("f32", "bf16"), default="f32")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    base = AutoModelForCausalLM.from_pretrained(os.path.dirname(a.model), gguf_file=os.path.basename(a.model),
                                                dtype=torch.bfloat16 if a.dtype == "bf16" else torch.float32)
    model = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules="all-linear",
                                            bias="none", task_type="CAUSAL_LM"))
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    vocab = base.config.vocab_size

    # The moonforge side's batch: the same linear congruential sequence.
    state, rows = 12345, []
    for _ in range(a.batch):
        row = []
        for _ in range(a.seq + 1):
            state = (state * 1103515245 + 12345) % 2147483648
            row.append(state % vocab)
        rows.append(row)
    data = torch.tensor(rows)
    tokens, targets = data[:, :-1].clone(), data[:, 1:].clone()
    targets[:, : a.seq // 2] = -100

    def step():
        logits = model(input_ids=tokens).logits
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)
        loss.backward()
        opt.step()
        opt.zero_grad()
        return loss.item()

    for _ in range(4):  # warm-up: torch's steps get faster over the first five or so
        step()
    print("ready", flush=True)
    steps, total = 0, 0.0
    for _ in sys.stdin:
        t0 = time.perf_counter()
        loss = step()
        dt = time.perf_counter() - t0
        steps, total = steps + 1, total + dt
        print("step", dt, loss, flush=True)
    if steps:
        print("tokens_per_s", steps * a.batch * a.seq / total)


if __name__ == "__main__":
    main()
