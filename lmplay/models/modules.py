"""Building blocks shared by the model families: norms, attention, MLPs, rotary, KV cache."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmplay.models.args import ModelArgs


class RMSNorm(nn.Module):
    """Root-mean-square norm with a learned gain (no bias, no mean subtraction)."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        # Normalise in float32 so bf16/fp16 activations do not lose the small-variance tail.
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return xf.type_as(x) * self.weight


class KVCache:
    """Keys and values of every block for the tokens seen so far, for incremental decoding.

    `pos` is where the tokens of the current forward start. Each attention layer calls
    `update` with its new keys/values; the model calls `advance` once all blocks have run.
    Storage for `max_len` positions is allocated on first use, in the keys' dtype and device.
    """

    def __init__(self, max_len: int) -> None:
        self.max_len = max_len
        self.pos = 0
        self._k: dict[int, Tensor] = {}
        self._v: dict[int, Tensor] = {}
        # The cache of a wrapped model that keeps its own (a transformers Cache); `pos` still
        # counts its tokens.
        self.external: object | None = None

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store k, v (B, H, T, D) at `pos`; return all keys/values so far (B, H, pos+T, D)."""
        B, H, T, D = k.shape
        if layer not in self._k:
            self._k[layer] = k.new_zeros(B, H, self.max_len, D)
            self._v[layer] = v.new_zeros(B, H, self.max_len, v.size(-1))
        end = self.pos + T
        self._k[layer][:, :, self.pos : end] = k
        self._v[layer][:, :, self.pos : end] = v
        return self._k[layer][:, :, :end], self._v[layer][:, :, :end]

    def advance(self, num_tokens: int) -> None:
        self.pos += num_tokens


def start_position(num_tokens: int, cache: KVCache | None, context_len: int) -> int:
    """Position of the first of `num_tokens` new tokens; refuses to run past the context."""
    start = cache.pos if cache is not None else 0
    if start + num_tokens > context_len:
        raise ValueError(
            f"{start} cached + {num_tokens} new tokens exceed the context length {context_len}"
        )
    return start


def token_positions(
    input_ids: Tensor,
    kv_cache: KVCache | None,
    context_len: int,
    positions: Tensor | None,
    segments: Tensor | None,
) -> tuple[Tensor, Tensor | None]:
    """Positions to embed, (T,) or (B, T), and the attention mask of packed rows (or None).

    Rows packed with several samples (`lmplay.data.packing`) bring each token's position in its
    own sample and its sample's slot in the row; others count positions from the cache.
    """
    num_tokens = input_ids.size(1)
    if segments is None:
        start = start_position(num_tokens, kv_cache, context_len)
        return torch.arange(start, start + num_tokens, device=input_ids.device), None
    if kv_cache is not None or positions is None:
        raise ValueError("packed rows need positions and cannot use a KV cache")
    if num_tokens > context_len:
        raise ValueError(f"{num_tokens} tokens exceed the context length {context_len}")
    return positions, segment_mask(segments)


def segment_mask(segments: Tensor) -> Tensor:
    """(B, 1, T, T) bool: query t may attend key s when both are in one sample and s <= t."""
    T = segments.size(1)
    same = segments.unsqueeze(2) == segments.unsqueeze(1)  # (B, T, T)
    causal = torch.ones(T, T, dtype=torch.bool, device=segments.device).tril()
    return (same & causal).unsqueeze(1)


def causal_attention(
    q: Tensor, k: Tensor, v: Tensor, dropout_p: float = 0.0, mask: Tensor | None = None
) -> Tensor:
    """Attention of q (B, H, Tq, D) over k, v (B, H, Tk, D), where q are the last Tq positions.

    `mask` (B, 1, T, T), from `segment_mask`, replaces the causal mask for packed rows.
    """
    Tq, Tk = q.size(-2), k.size(-2)
    if mask is not None:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
    if Tq == Tk:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
    if Tq == 1:
        # The newest token may look at everything cached: no mask at all.
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
    # is_causal aligns the mask top-left; cached prefixes need it aligned bottom-right.
    mask = torch.ones(Tq, Tk, dtype=torch.bool, device=q.device).tril(diagonal=Tk - Tq)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)


Rope = tuple[Tensor, Tensor]  # cos, sin: (T, head_dim/2) or (B, 1, T, head_dim/2) each


def rotary_tables(head_dim: int, positions: Tensor) -> Rope:
    """cos/sin for `positions` (T,) or per row (B, T), computed fresh in float32.

    Shaped to broadcast over (B, H, T, head_dim/2). Not stored as buffers, so a model cast to
    bf16 keeps exact angles and checkpoints carry no derived tensors.
    """
    device = positions.device
    inv_freq = 10000.0 ** (
        -torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim
    )
    angles = positions.float().unsqueeze(-1) * inv_freq  # (T, D/2) or (B, T, D/2)
    if angles.dim() == 3:
        angles = angles.unsqueeze(1)  # (B, 1, T, D/2): the same angles for every head
    return angles.cos(), angles.sin()


def apply_rotary(x: Tensor, rope: Rope) -> Tensor:
    """Rotate channel pairs (i, i + D/2) of x (B, H, T, D) by their position's angles."""
    cos, sin = rope
    x1, x2 = x.float().chunk(2, dim=-1)  # (B, H, T, D/2) each
    out = torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
    return out.type_as(x)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention through SDPA, with optional rotary positions."""

    def __init__(self, args: ModelArgs, layer: int, *, bias: bool) -> None:
        super().__init__()
        self.layer = layer
        self.num_heads = args.num_heads
        self.dropout = args.dropout
        self.qkv = nn.Linear(args.embed_dim, 3 * args.embed_dim, bias=bias)
        self.proj = nn.Linear(args.embed_dim, args.embed_dim, bias=bias)
        self.resid_drop = nn.Dropout(args.dropout)

    def forward(
        self,
        x: Tensor,
        cache: KVCache | None = None,
        rope: Rope | None = None,
        mask: Tensor | None = None,
    ) -> Tensor:
        B, T, C = x.shape
        H = self.num_heads
        q, k, v = self.qkv(x).split(C, dim=2)  # (B, T, C) each
        q = q.view(B, T, H, C // H).transpose(1, 2)  # (B, H, T, D)
        k = k.view(B, T, H, C // H).transpose(1, 2)  # (B, H, T, D)
        v = v.view(B, T, H, C // H).transpose(1, 2)  # (B, H, T, D)
        if rope is not None:
            q, k = apply_rotary(q, rope), apply_rotary(k, rope)
        if cache is not None:
            k, v = cache.update(self.layer, k, v)  # (B, H, pos+T, D)
        dropout = self.dropout if self.training else 0.0
        y = causal_attention(q, k, v, dropout, mask)  # (B, H, T, D)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_drop(self.proj(y))


class GeluMLP(nn.Module):
    """GPT-2's feed-forward: expand 4x, GELU, project back.

    `approximate` is F.gelu's: "none" (exact, erf) or "tanh" (what released GPT-2 weights use).
    """

    def __init__(self, args: ModelArgs, *, bias: bool = True, approximate: str = "none") -> None:
        super().__init__()
        self.approximate = approximate
        self.fc = nn.Linear(args.embed_dim, 4 * args.embed_dim, bias=bias)
        self.proj = nn.Linear(4 * args.embed_dim, args.embed_dim, bias=bias)
        self.drop = nn.Dropout(args.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.proj(F.gelu(self.fc(x), approximate=self.approximate)))


def swiglu_hidden(embed_dim: int, multiple_of: int = 64) -> int:
    # 8/3 * d keeps the parameter count of a 4x GELU MLP despite the third matrix.
    return multiple_of * math.ceil(8 * embed_dim / 3 / multiple_of)


class SwiGLU(nn.Module):
    """Gated feed-forward: proj(silu(gate(x)) * up(x)), no biases."""

    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        hidden = swiglu_hidden(args.embed_dim)
        self.gate = nn.Linear(args.embed_dim, hidden, bias=False)
        self.up = nn.Linear(args.embed_dim, hidden, bias=False)
        self.proj = nn.Linear(hidden, args.embed_dim, bias=False)
        self.drop = nn.Dropout(args.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.proj(F.silu(self.gate(x)) * self.up(x)))


def init_weights(model: nn.Module, num_blocks: int, *, scale_residual: bool = True) -> None:
    """GPT-2 init: N(0, 0.02) for linear and embedding weights, zero biases.

    With `scale_residual`, every residual-branch output projection (a Linear named `proj`)
    gets std 0.02/sqrt(2*num_blocks), so the residual stream's variance does not grow with
    depth. Norm gains keep their own init (ones).
    """
    std = 0.02
    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            residual_out = scale_residual and name.rsplit(".", 1)[-1] == "proj"
            w_std = std / math.sqrt(2 * num_blocks) if residual_out else std
            nn.init.normal_(module.weight, mean=0.0, std=w_std)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)


def matmul_params(model: nn.Module) -> int:
    """Weights used in a matmul per token: every Linear, a tied lm_head included.

    Embedding lookups cost no flops, so token and position tables are left out unless
    their weight doubles as the output projection.
    """
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))


def flops_per_token(args: ModelArgs, num_matmul_params: int | None = None) -> int:
    """Training flops per token: 6*N for forward+backward matmuls plus the attention term.

    The attention term 12 * blocks * embed_dim * context_len is the PaLM / nanoGPT
    estimate (full, unmasked score and value matmuls at the full context). Without
    `num_matmul_params`, N is the GPT-2 block estimate 12*L*d^2 plus the d*V output head.
    """
    L, d, T = args.num_blocks, args.embed_dim, args.context_len
    n = num_matmul_params if num_matmul_params is not None else 12 * L * d * d + d * args.vocab_size
    return 6 * n + 12 * L * d * T
