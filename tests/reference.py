"""An independent reference for every plan, written from docs/spec.md alone.

Nothing here imports nosink. Masks are boolean matrices built with two loops over (i, j) from
the table of docs/spec.md §2; the named configurations are re-derived from docs/spec.md §3; the architectures are
the equations of docs/spec.md §4; attention is plain eager attention written out by hand (Llama-style and
GPT-2-style layers), or, for the other families, the model's own decoder layers run one at a time
in eager mode with the explicit mask. Every row is run alone, without padding, positions 0..n-1.
"""

from __future__ import annotations

import functools
import math

import torch

# ------------------------------------------------------------------ docs/spec.md §2: masks


def allowed(pattern: str, m: int, i: int, j: int) -> bool:
    if pattern == "causal":
        return j <= i
    if pattern == "backward":
        return j >= i
    if pattern == "bidir":
        return True
    if pattern == "nosink":
        return not (j <= m and j < i)
    if pattern == "nosink_causal":
        return j <= i and not (j <= m and j < i)
    raise ValueError(pattern)


@functools.cache
def window_matrix(window: int, n: int) -> torch.Tensor:
    """[n, n] bool, True = |i - j| < window: what a sliding-window layer may see (cached, read-only)."""
    return torch.tensor([[abs(i - j) < window for j in range(n)] for i in range(n)])


@functools.cache
def mask_matrix(pattern: str, m: int, n: int) -> torch.Tensor:
    """[n, n] bool, True = query i may attend key j (cached: never modify the result in place)."""
    return torch.tensor([[allowed(pattern, m, i, j) for j in range(n)] for i in range(n)])


# ------------------------------------------------------------------ docs/spec.md §3: named configurations


def layer_patterns(name: str, num_layers: int, k: int, k0: int = 0, m: int = 0) -> list[tuple[str, int]]:
    """(pattern, m) for every layer, bottom to top, of an in-place configuration."""
    top = set(range(num_layers - k, num_layers))
    top0 = set(range(num_layers - k0, num_layers))
    out = []
    for layer in range(num_layers):
        if name == "baseline":
            out.append(("causal", 0))
        elif name == "inplace-bidir":
            out.append(("bidir", 0) if layer in top else ("causal", 0))
        elif name == "inplace-back":
            out.append(("backward", 0) if layer in top else ("causal", 0))
        elif name == "mask-bidir":
            out.append(("nosink", m) if layer in top else ("causal", 0))
        elif name == "mask-for":
            out.append(("nosink_causal", m) if layer in top else ("causal", 0))
        elif name == "mask-all":
            out.append(("nosink", m) if layer in top else ("nosink_causal", m))
        elif name == "mask&bidir":
            out.append(("nosink", m) if layer in top0 else ("bidir", 0) if layer in top else ("causal", 0))
        else:
            raise ValueError(name)
    return out


# ------------------------------------------------------------------ hand-written layers


def _rope(x: torch.Tensor, theta: float) -> torch.Tensor:
    """x: [H, n, d] -> rotated with positions 0..n-1 (rotate-half layout)."""
    n, d = x.shape[1], x.shape[2]
    inv_freq = 1.0 / (theta ** (torch.arange(0, d, 2, dtype=torch.float32) / d))  # [d/2]
    angles = torch.arange(n, dtype=torch.float32)[:, None] * inv_freq[None, :]  # [n, d/2]
    cos, sin = torch.cat([angles, angles], -1).cos(), torch.cat([angles, angles], -1).sin()  # [n, d]
    rotated = torch.cat([-x[..., d // 2 :], x[..., : d // 2]], -1)
    return x * cos + rotated * sin


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, scale: float) -> torch.Tensor:
    """q, k, v: [H, n, d]; mask [n, n] bool -> [n, H*d]."""
    scores = q @ k.transpose(-1, -2) * scale  # [H, n, n]
    scores = scores.masked_fill(~mask, float("-inf"))
    out = scores.softmax(-1) @ v  # [H, n, d]
    return out.transpose(0, 1).reshape(q.shape[1], -1)


def llama_layer(layer, h: torch.Tensor, mask: torch.Tensor, config) -> torch.Tensor:
    """A Llama/Qwen2 decoder layer written out by hand. h: [n, D]."""
    attn, n = layer.self_attn, h.shape[0]
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    theta = config.rope_parameters["rope_theta"]
    x = layer.input_layernorm(h)
    q = attn.q_proj(x).view(n, heads, head_dim).transpose(0, 1)  # [H, n, d]
    k = attn.k_proj(x).view(n, kv_heads, head_dim).transpose(0, 1)  # [Hkv, n, d]
    v = attn.v_proj(x).view(n, kv_heads, head_dim).transpose(0, 1)
    q, k = _rope(q, theta), _rope(k, theta)
    k, v = k.repeat_interleave(heads // kv_heads, 0), v.repeat_interleave(heads // kv_heads, 0)
    h = h + attn.o_proj(_attend(q, k, v, mask, head_dim**-0.5))
    return h + layer.mlp(layer.post_attention_layernorm(h))


def gpt2_layer(block, h: torch.Tensor, mask: torch.Tensor, config) -> torch.Tensor:
    """A GPT-2 block written out by hand. h: [n, D]."""
    n, heads = h.shape[0], config.n_head
    head_dim = config.n_embd // heads
    q, k, v = block.attn.c_attn(block.ln_1(h)).split(config.n_embd, dim=-1)
    q, k, v = (t.view(n, heads, head_dim).transpose(0, 1) for t in (q, k, v))
    h = h + block.attn.c_proj(_attend(q, k, v, mask, 1 / math.sqrt(head_dim)))
    return h + block.mlp(block.ln_2(h))


def _hf_eager_layer(base):
    """The model's own decoder layer with an explicit additive mask (for families not written out)."""

    def run(index: int, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        config = base.config
        x = h[None]  # [1, n, D]
        positions = torch.arange(h.shape[0])[None]  # [1, n]
        if getattr(config, "layer_types", None) and config.model_type.startswith("gemma3"):
            rope = base.rotary_emb(x, positions, config.layer_types[index])
        else:
            rope = base.rotary_emb(x, positions)
        additive = torch.zeros(mask.shape).masked_fill(~mask, torch.finfo(torch.float32).min)[None, None]
        out = base.layers[index](x, attention_mask=additive, position_embeddings=rope, position_ids=positions)
        return (out[0] if isinstance(out, tuple) else out)[0]

    return run


class Reference:
    """Final-norm states of one unpadded row under a configuration, straight from docs/spec.md."""

    def __init__(self, base, *, hand_written: bool) -> None:
        self.base, self.config = base, base.config
        self.gpt2 = self.config.model_type == "gpt2"
        self.hand_written = hand_written or self.gpt2
        if not self.hand_written and self.config._attn_implementation != "eager":
            raise ValueError("the HF-layer reference needs an eager model")
        self.num_layers = self.config.num_hidden_layers

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        if self.gpt2:
            return self.base.wte(ids) + self.base.wpe(torch.arange(len(ids)))
        return self.base.embed_tokens(ids)

    def norm(self, h: torch.Tensor) -> torch.Tensor:
        return self.base.ln_f(h) if self.gpt2 else self.base.norm(h)

    def layer(self, index: int, h: torch.Tensor, pattern: tuple[str, int]) -> torch.Tensor:
        n = h.shape[0]
        mask = mask_matrix(pattern[0], pattern[1], n)
        if getattr(self.config, "layer_types", [None] * (index + 1))[index] == "sliding_attention":
            mask = mask & window_matrix(self.config.sliding_window, n)  # a sliding layer sees |i - j| < window
        if self.gpt2:
            return gpt2_layer(self.base.h[index], h, mask, self.config)
        if self.hand_written:
            return llama_layer(self.base.layers[index], h, mask, self.config)
        return _hf_eager_layer(self.base)(index, h, mask)

    @torch.no_grad()
    def readout(self, ids: torch.Tensor, config: dict, depths: list[int], *, norm: bool) -> torch.Tensor:
        """The mean over ``depths`` of the states after that many layers (0 = embeddings), each normed if ``norm``.

        Single-pass configurations only: the per-layer patterns of docs/spec.md §3, run one layer at a time.
        """
        name, k, L = config["name"], config.get("k", 0), self.num_layers
        patterns = (
            config["patterns"]
            if name == "layers"
            else layer_patterns(name, L, k, config.get("k0", 0), config.get("m", 0))
        )
        h, read = self.embed(ids), []
        for depth in range(max(depths) + 1):
            if depth in depths:
                read.append(self.norm(h) if norm else h)
            if depth < max(depths):
                h = self.layer(depth, h, patterns[depth])
        return torch.stack(read).mean(0)

    @torch.no_grad()
    def states(self, ids: torch.Tensor, config: dict) -> torch.Tensor:
        """ids: [n] -> [n, D]. ``config`` holds name, k, k0, m and, for branched ones, x."""
        name, k, L = config["name"], config.get("k", 0), self.num_layers
        causal = ("causal", 0)
        if name in ("inter", "extra", "extend") and k == 0:
            name = "baseline"  # docs/spec.md §1: k = 0 is the unchanged model
        if name == "layers":
            patterns = config["patterns"]
        elif name not in ("inter", "extra", "extend"):
            patterns = layer_patterns(name, L, k, config.get("k0", 0), config.get("m", 0))
        h = self.embed(ids)
        if name == "inter":
            for i in range(L - k):
                h = self.layer(i, h, causal)
            a, b = h, h
            for i in range(L - k, L):
                a, b = self.layer(i, a, config["x"]), self.layer(i, b, causal)
            return self.norm(a + b)
        if name == "extra":
            a, b = h, h
            for i in range(k):
                a = self.layer(i, a, config["x"])
            for i in range(L):
                b = self.layer(i, b, causal)
            return self.norm(a + b)
        if name == "extend":
            for i in range(L):
                h = self.layer(i, h, causal)
            for _ in range(k):
                h = self.layer(L - 1, h, config["x"])
            return self.norm(h)
        for i in range(L):
            h = self.layer(i, h, patterns[i])
        return self.norm(h)
