"""PyTorch side of the training-step benchmark.

The same Llama as moonforge's side (RMSNorm, rotary embeddings in the
rotate-half convention, grouped-query causal attention through
scaled_dot_product_attention, SwiGLU FFN, tied embeddings), in f32 on the
CPU, trained with torch.optim.AdamW on random tokens. Prints one
`key value` line per figure for run.sh to read:

    params N
    train_tokens_per_s X     (forward + backward + AdamW step, after warm-up)
    decode_tokens_per_s Y    (greedy, KV cache, batch 1, prefill included)
"""
import argparse
import time

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope_tables(head_dim, max_len, theta):
    inv_freq = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(max_len, dtype=torch.float32), inv_freq)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def rotate(x, cos, sin):
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


class Attention(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = a.heads, a.kv_heads, a.dim // a.heads
        self.q_proj = nn.Linear(a.dim, a.heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(a.dim, a.kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(a.dim, a.kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(a.heads * self.head_dim, a.dim, bias=False)

    def forward(self, x, cos, sin, cache):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.kv_heads, self.head_dim).transpose(1, 2)
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        if cache is not None:
            if cache:
                k, v = torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2)
            cache[:] = [k, v]
        # Causal masking is only needed when several queries are processed at
        # once; a single decode query sees the whole cache.
        out = F.scaled_dot_product_attention(q, k, v, is_causal=T > 1,
                                             enable_gqa=self.heads != self.kv_heads)
        return self.o_proj(out.transpose(1, 2).reshape(B, T, -1))


class Block(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.input_layernorm = RMSNorm(a.dim, 1e-5)
        self.self_attn = Attention(a)
        self.post_attention_layernorm = RMSNorm(a.dim, 1e-5)
        self.gate_proj = nn.Linear(a.dim, a.ffn, bias=False)
        self.up_proj = nn.Linear(a.dim, a.ffn, bias=False)
        self.down_proj = nn.Linear(a.ffn, a.dim, bias=False)

    def forward(self, x, cos, sin, cache):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, cache)
        h = self.post_attention_layernorm(x)
        return x + self.down_proj(F.silu(self.gate_proj(h)) * self.up_proj(h))


class Llama(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.embed_tokens = nn.Embedding(a.vocab, a.dim)
        self.layers = nn.ModuleList(Block(a) for _ in range(a.layers))
        self.norm = RMSNorm(a.dim, 1e-5)
        self.lm_head = nn.Linear(a.dim, a.vocab, bias=False)
        self.lm_head.weight = self.embed_tokens.weight
        for p in self.parameters():
            if p.dim() == 2:
                nn.init.normal_(p, std=0.02)
        cos, sin = rope_tables(a.dim // a.heads, a.seq + a.decode_tokens + a.prompt, 10000.0)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def forward(self, tokens, start=0, caches=None):
        T = tokens.shape[1]
        cos, sin = self.cos[start:start + T], self.sin[start:start + T]
        x = self.embed_tokens(tokens)
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin, None if caches is None else caches[i])
        return self.lm_head(self.norm(x))


def train_tokens_per_s(model, a):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    gen = torch.Generator().manual_seed(1)
    data = torch.randint(0, a.vocab, (a.batch, a.seq + 1), generator=gen)
    tokens, targets = data[:, :-1], data[:, 1:]

    def step():
        opt.zero_grad(set_to_none=False)
        logits = model(tokens)
        loss = F.cross_entropy(logits.view(-1, a.vocab), targets.reshape(-1))
        loss.backward()
        opt.step()

    for _ in range(a.warmup):
        step()
    started = time.perf_counter()
    for _ in range(a.steps):
        step()
    return a.steps * a.batch * a.seq / (time.perf_counter() - started)


@torch.no_grad()
def decode_tokens_per_s(model, a):
    gen = torch.Generator().manual_seed(2)
    prompt = torch.randint(0, a.vocab, (1, a.prompt), generator=gen)

    def generate():
        caches = [[] for _ in model.layers]
        logits = model(prompt, 0, caches)
        for pos in range(a.prompt, a.prompt + a.decode_tokens):
            next_id = logits[:, -1].argmax(-1, keepdim=True)
            logits = model(next_id, pos, caches)

    generate()
    started = time.perf_counter()
    generate()
    return a.decode_tokens / (time.perf_counter() - started)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for name, default in [("dim", 288), ("layers", 6), ("heads", 6), ("kv-heads", 6), ("ffn", 768),
                          ("vocab", 32000), ("seq", 256), ("batch", 8), ("steps", 10),
                          ("warmup", 2), ("threads", 2), ("decode-tokens", 128), ("prompt", 16)]:
        p.add_argument("--" + name, type=int, default=default)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = Llama(a)
    print("params", sum(p.numel() for p in model.parameters()))
    print("train_tokens_per_s %.1f" % train_tokens_per_s(model, a))
    model.eval()
    print("decode_tokens_per_s %.1f" % decode_tokens_per_s(model, a))


if __name__ == "__main__":
    main()
