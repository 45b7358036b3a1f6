"""The toy decoder-only transformer every experiment trains (nanoGPT-style, one readable file).

Architecture: token embedding -> ``n_layers`` pre-norm blocks (LayerNorm -> causal self-attention ->
residual, LayerNorm -> GELU MLP -> residual) -> final LayerNorm -> linear head (tied to the token
embedding by default). Norm: ``nn.LayerNorm`` (GPT-2 / nanoGPT), not RMSNorm. Linear layers have no bias.
Weight init as nanoGPT (Radford et al. 2019, GPT-2 §2.3): normal(0, 0.02), residual output projections
normal(0, 0.02 / sqrt(2 * n_layers)).

Positions enter ONLY through the positional-encoding hooks (``ropelib.encodings.base``; docs/design.md §3):

* ``encoding.positions(T, offset, device)`` once per forward (``offset`` = tokens already cached),
* ``encoding.embed(x, positions)`` once, at the input (absolute schemes: Vaswani et al. 2017 §3.5),
* ``encoding.bias(q_positions, k_positions)`` once per forward, shared by every layer (as T5 does,
  Raffel et al. 2020; ALiBi, arXiv 2108.12409), combined with the causal mask into one float mask,
* ``encoding.rotate(q, k, q_positions, k_positions)`` in every layer (RoPE, arXiv 2104.09864 §3.4).

Attention runs through ``torch.nn.functional.scaled_dot_product_attention`` (``is_causal=True`` when
there is no bias and no cache offset, the fast path), so the model runs on CPU, CUDA and MPS. Attention
weights are computed explicitly only when asked for (``return_attention=True``).

Incremental decoding uses a ``KVCache`` holding keys BEFORE rotation plus every key's integer position,
so each step re-rotates all keys with the current positions; the logits equal the full forward pass
(which also keeps length-dependent scaling such as dynamic NTK exact).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ropelib.encodings import PositionalEncoding, encoding_params, make_encoding

__all__ = [
    "INIT_STD",
    "GPT2_WIDTH",
    "width_scaled_init_std",
    "ModelConfig",
    "ToyTransformer",
    "KVCache",
    "start_windows",
    "select_device",
    "resolve_device",
    "maybe_compile",
]

#: GPT-2's standard deviation of the normal init of every weight matrix and embedding (nanoGPT too),
#: chosen for GPT-2's width ``GPT2_WIDTH``; ``ModelConfig.init_std``'s default
INIT_STD = 0.02
#: the width (``d_model``) of GPT-2 small, for which ``INIT_STD`` was chosen
GPT2_WIDTH = 768


def width_scaled_init_std(d_model: int) -> float:
    """GPT-2's init carried to width ``d_model`` by the fan-in rule: ``0.02 * sqrt(768 / d_model)``.

    A weight's init variance is kept proportional to ``1 / fan_in`` (He et al. 2015; the rule behind
    PyTorch's default ``Linear`` init and muP's), anchored at GPT-2 small (0.02 at width 768). At
    ``d_model = 64`` it gives 0.069 instead of 0.02: with 0.02 the dot products of queries and keys
    start about 12x smaller than GPT-2's, and the models whose positional signal must pass through the
    query/key projections (absolute and no encodings) sit at bigram level for the whole budget
    (README, "Experiments": the pilot numbers).
    """
    if not isinstance(d_model, int) or isinstance(d_model, bool) or d_model < 1:
        raise ValueError(f"d_model must be a positive integer, got {d_model!r}")
    return INIT_STD * math.sqrt(GPT2_WIDTH / d_model)


# ---------------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------------
def _check_int(label: str, value: Any, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{label} must be an integer >= {minimum}, got {value!r}")


@dataclass(frozen=True)
class ModelConfig:
    """Sizes and positional encoding of a ``ToyTransformer``. JSON round trip: ``to_dict``/``from_dict``.

    ``encoding`` is a name in ``ropelib.encodings.ENCODINGS`` and ``encoding_params`` its keyword
    parameters (JSON-serialisable), validated against ``ropelib.encodings.encoding_params(encoding)``.
    The head dimension is ``d_model // n_heads``.

    ``init_std``: the standard deviation of the normal init of every weight matrix and embedding
    (default GPT-2's 0.02; ``width_scaled_init_std`` carries it to other widths); residual output
    projections get ``init_std / sqrt(2 * n_layers)``.

    ``bos_token_id``: when set, every window the model reads starts with this token: training and
    evaluation put it in place of the window's first input (``start_windows``), so position 0 is a
    start marker whatever the window's offset in the text. A model with no positional encoding needs
    one to tell positions apart (Kazemnejad et al. 2023, arXiv 2305.19466, Theorem 1 builds absolute
    positions from attention to the start token); HF configs carry the same field.
    """

    vocab_size: int
    n_layers: int = 2
    n_heads: int = 4
    d_model: int = 128
    mlp_ratio: int = 4
    dropout: float = 0.0
    tie_embeddings: bool = True
    encoding: str = "rope"
    encoding_params: Mapping[str, Any] = field(default_factory=dict)
    init_std: float = INIT_STD
    bos_token_id: int | None = None

    def __post_init__(self) -> None:
        _check_int("vocab_size", self.vocab_size, 1)
        _check_int("n_layers", self.n_layers, 1)
        _check_int("n_heads", self.n_heads, 1)
        _check_int("d_model", self.d_model, 1)
        _check_int("mlp_ratio", self.mlp_ratio, 1)
        if self.d_model % self.n_heads != 0:
            raise ValueError(
                f"d_model={self.d_model} must be divisible by n_heads={self.n_heads} (head_dim = d_model // n_heads)"
            )
        if (
            isinstance(self.dropout, bool)
            or not isinstance(self.dropout, (int, float))
            or not (0.0 <= self.dropout < 1.0)
        ):
            raise ValueError(f"dropout must be a float in [0, 1), got {self.dropout!r}")
        if (
            isinstance(self.init_std, bool)
            or not isinstance(self.init_std, (int, float))
            or not (0.0 < self.init_std < math.inf)
        ):
            raise ValueError(f"init_std must be a finite number > 0, got {self.init_std!r}")
        object.__setattr__(self, "init_std", float(self.init_std))
        if self.bos_token_id is not None and (
            not isinstance(self.bos_token_id, int)
            or isinstance(self.bos_token_id, bool)
            or not 0 <= self.bos_token_id < self.vocab_size
        ):
            raise ValueError(
                f"bos_token_id must be None or a token id in [0, {self.vocab_size}) (vocab_size={self.vocab_size}), "
                f"got {self.bos_token_id!r}"
            )
        if not isinstance(self.tie_embeddings, bool):
            raise ValueError(f"tie_embeddings must be True or False, got {self.tie_embeddings!r}")
        if not isinstance(self.encoding_params, Mapping):
            raise ValueError(f"encoding_params must be a mapping, got {self.encoding_params!r}")
        accepted = encoding_params(self.encoding)  # unknown name -> ValueError listing the known ones
        unknown = sorted(set(self.encoding_params) - set(accepted))
        if unknown:
            raise ValueError(
                f"unknown encoding_params {', '.join(map(repr, unknown))} for encoding {self.encoding!r}; "
                f"accepted: {', '.join(sorted(accepted)) or '(none)'}"
            )
        try:
            params = json.loads(json.dumps(dict(self.encoding_params), sort_keys=True))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"encoding_params must be JSON-serialisable, got {self.encoding_params!r}: {exc}")
        # a private copy, so mutating the caller's dict cannot change a frozen config
        object.__setattr__(self, "encoding_params", params)

    @property
    def head_dim(self) -> int:
        """Per-head width ``d_model // n_heads``."""
        return self.d_model // self.n_heads

    def __hash__(self) -> int:  # the params mapping is a dict: hash the canonical JSON instead
        return hash(json.dumps(self.to_dict(), sort_keys=True))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict (``from_dict(to_dict())`` gives an equal config)."""
        out = asdict(self)
        out["encoding_params"] = json.loads(json.dumps(dict(self.encoding_params)))
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelConfig:
        """Inverse of ``to_dict``; an unknown key raises ValueError listing the accepted ones."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown ModelConfig field(s) {unknown}; accepted: {', '.join(sorted(names))}")
        return cls(**dict(data))


# ---------------------------------------------------------------------------------------------
# devices and compilation
# ---------------------------------------------------------------------------------------------
def _available_devices() -> list[str]:
    found = ["cpu"]
    if torch.cuda.is_available():
        found.insert(0, "cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        found.insert(len(found) - 1, "mps")
    return found


def select_device(name: str = "auto") -> torch.device:
    """``"auto"`` -> CUDA if available, else MPS, else CPU; ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"``.

    Asking for a device that is not available raises ``RuntimeError`` naming it and the available ones;
    a name that is not a device type raises ``ValueError``.
    """
    if not isinstance(name, str):
        raise ValueError(f"device must be a string ('auto', 'cpu', 'cuda', 'cuda:N', 'mps'), got {name!r}")
    available = _available_devices()
    if name == "auto":
        return torch.device(available[0])
    kind = name.split(":", 1)[0]
    if kind not in ("cpu", "cuda", "mps"):
        raise ValueError(f"unknown device {name!r}; allowed: 'auto', 'cpu', 'cuda', 'cuda:N', 'mps'")
    if kind not in available:
        raise RuntimeError(f"device {name!r} is not available on this machine; available: {', '.join(available)}")
    device = torch.device(name)
    if kind == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise RuntimeError(
            f"device {name!r} is not available: this machine has {torch.cuda.device_count()} CUDA device(s)"
        )
    return device


def resolve_device(device: str | torch.device) -> torch.device:
    """The ``torch.device`` to run on: a name (``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"``)
    goes through ``select_device``; a ``torch.device`` is returned as it is.

    A run or sweep resolves its device once, at its entry (``ropelib.runs.run``, ``ropelib.train.train``),
    and passes the ``torch.device`` down, so ``"auto"`` cannot resolve differently along one run. Anything
    else raises ``ValueError`` naming the value and what is accepted.
    """
    if isinstance(device, torch.device):
        return device
    if isinstance(device, str):
        return select_device(device)
    raise ValueError(
        f"device must be 'auto', 'cpu', 'cuda', 'cuda:N', 'mps' or a torch.device, got {device!r} "
        f"({type(device).__name__})"
    )


def maybe_compile(model: nn.Module, enabled: bool) -> nn.Module:
    """``torch.compile(model)`` when ``enabled``, else ``model`` unchanged (the TrainConfig ``compile`` flag).

    The compiled wrapper shares parameters with ``model``; save checkpoints from the original.
    """
    if not isinstance(enabled, bool):
        raise ValueError(f"enabled must be True or False, got {enabled!r}")
    return torch.compile(model) if enabled else model


# ---------------------------------------------------------------------------------------------
# start-of-window token
# ---------------------------------------------------------------------------------------------
def start_windows(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``x`` (B, T) with its first column set to the model's ``bos_token_id``; ``x`` itself if it has none.

    Every window a model with a start token is trained or evaluated on goes through here (training
    batches, validation, perplexity, loss by position, retrieval), so the convention cannot differ
    between training and evaluation. The first input token of the window is dropped (not its target:
    position 0 predicts the window's second character from the start token alone), so windows cover
    the text exactly as without a start token. ``x`` is not modified in place.
    """
    config = getattr(model, "config", None)
    if not isinstance(config, ModelConfig):  # e.g. a torch.compile wrapper: look through it
        config = getattr(getattr(model, "_orig_mod", None), "config", None)
    bos = getattr(config, "bos_token_id", None)
    if bos is None:
        return x
    if x.dim() != 2 or x.shape[1] < 1:
        raise ValueError(f"windows must be (B, T) with T >= 1, got shape {tuple(x.shape)}")
    out = x.clone()
    out[:, 0] = bos
    return out


# ---------------------------------------------------------------------------------------------
# KV cache
# ---------------------------------------------------------------------------------------------
class KVCache:
    """Keys (before rotation) and values of every layer, plus the integer positions of cached tokens.

    ``ToyTransformer.forward(idx, kv_cache=cache)`` appends the new tokens; ``len(cache)`` is the
    number of cached tokens (the next forward's ``offset``).
    """

    def __init__(self, n_layers: int) -> None:
        _check_int("n_layers", n_layers, 1)
        self.n_layers = n_layers
        self.keys: list[torch.Tensor | None] = [None] * n_layers  # each (B, H, Tk, D), unrotated
        self.values: list[torch.Tensor | None] = [None] * n_layers  # each (B, H, Tk, D)
        self.positions: torch.Tensor | None = None  # (Tk,) or (B, Tk) long

    def __len__(self) -> int:
        return 0 if self.positions is None else int(self.positions.shape[-1])

    def extend_positions(self, new: torch.Tensor) -> torch.Tensor:
        """Append the new tokens' positions ``(T,)`` or ``(B, T)``; return all key positions."""
        if self.positions is None:
            self.positions = new
        else:
            old = self.positions
            if old.dim() != new.dim():  # one batched, one shared: broadcast the shared one
                batch = max(old.shape[0] if old.dim() == 2 else 1, new.shape[0] if new.dim() == 2 else 1)
                old = old.expand(batch, -1) if old.dim() == 1 else old
                new = new.expand(batch, -1) if new.dim() == 1 else new
            self.positions = torch.cat([old, new], dim=-1)
        return self.positions

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append ``k``, ``v`` (B, H, T, D) to ``layer``'s cache; return all cached (B, H, Tk, D)."""
        if self.keys[layer] is not None:
            k = torch.cat([self.keys[layer], k], dim=2)  # (B, H, Tk, D)
            v = torch.cat([self.values[layer], v], dim=2)  # (B, H, Tk, D)
        self.keys[layer], self.values[layer] = k, v
        return k, v


# ---------------------------------------------------------------------------------------------
# the network
# ---------------------------------------------------------------------------------------------
class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention; positions only through ``encoding.rotate`` and the mask."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.n_heads = config.n_heads
        self.head_dim = config.head_dim
        self.dropout = config.dropout
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model, bias=False)
        self.proj = nn.Linear(config.d_model, config.d_model, bias=False)

    def forward(
        self,
        x: torch.Tensor,
        encoding: PositionalEncoding,
        q_positions: torch.Tensor,
        k_positions: torch.Tensor,
        mask: torch.Tensor | None,
        is_causal: bool,
        kv_cache: KVCache | None,
        layer: int,
        return_attention: bool,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)  # 3 x (B, T, C)
        q = q.view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, D)
        k = k.view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, D)
        v = v.view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, D)
        if kv_cache is not None:
            k, v = kv_cache.update(layer, k, v)  # (B, H, Tk, D), keys stored before rotation
        q, k = encoding.rotate(q, k, q_positions, k_positions)  # (B, H, T, D), (B, H, Tk, D)
        if mask is not None and mask.dtype != torch.bool and mask.dtype != q.dtype:
            mask = mask.to(q.dtype)  # SDPA wants a float mask in the query dtype (bf16 under autocast)
        dropout_p = self.dropout if self.training else 0.0
        attn = None
        if return_attention:  # explicit path: same maths, weights kept
            scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(self.head_dim))  # (B, H, T, Tk)
            if is_causal:
                mask = _causal_bool(T, k.shape[2], 0, q.device)
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
            attn = torch.softmax(scores.float(), dim=-1).to(q.dtype)  # (B, H, T, Tk)
            y = F.dropout(attn, dropout_p, self.training) @ v  # (B, H, T, D)
        else:
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=is_causal
            )  # (B, H, T, D)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)
        return self.proj(y), attn


class MLP(nn.Module):
    """Position-wise feed-forward: Linear(C, r*C) -> GELU -> Linear(r*C, C)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(config.d_model, config.mlp_ratio * config.d_model, bias=False)
        self.proj = nn.Linear(config.mlp_ratio * config.d_model, config.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(self.fc(x)))  # (B, T, C)


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(LN(x)), then x + mlp(LN(x))."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.d_model)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.d_model)
        self.mlp = MLP(config)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, **attn_kwargs: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        a, attn = self.attn(self.ln_1(x), **attn_kwargs)  # (B, T, C)
        x = x + self.drop(a)
        x = x + self.drop(self.mlp(self.ln_2(x)))  # (B, T, C)
        return x, attn


def _causal_bool(tq: int, tk: int, offset: int, device: torch.device) -> torch.Tensor:
    """(Tq, Tk) bool, True where query i (cache index offset+i) may attend key j (j <= offset+i)."""
    q_idx = torch.arange(offset, offset + tq, device=device).unsqueeze(1)  # (Tq, 1)
    k_idx = torch.arange(tk, device=device).unsqueeze(0)  # (1, Tk)
    return k_idx <= q_idx  # (Tq, Tk)


class ToyTransformer(nn.Module):
    """Decoder-only transformer over ``config``; ``model.encoding`` is its ``PositionalEncoding``."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if not isinstance(config, ModelConfig):
            raise ValueError(f"config must be a ModelConfig, got {type(config).__name__}")
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList([Block(config) for _ in range(config.n_layers)])
        self.ln_f = nn.LayerNorm(config.d_model)
        self.head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.head.weight = self.tok_emb.weight
        std = config.init_std
        for module in self.modules():  # before the encoding exists: it keeps its own init
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=std)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
        for name, p in self.named_parameters():
            if name.endswith("proj.weight"):
                nn.init.normal_(p, mean=0.0, std=std / math.sqrt(2 * config.n_layers))
        self.encoding = make_encoding(
            config.encoding,
            n_heads=config.n_heads,
            head_dim=config.head_dim,
            d_model=config.d_model,
            params=config.encoding_params,
        )

    # -- public helpers -------------------------------------------------------------------------
    def num_parameters(self, include_embeddings: bool = True) -> int:
        """Number of parameters (tied weights counted once); optionally without the token embedding."""
        n = sum(p.numel() for p in self.parameters())
        return n if include_embeddings else n - self.tok_emb.weight.numel()

    def replace_encoding(self, encoding: PositionalEncoding) -> None:
        """Swap the positional encoding (e.g. RoPE scaling at evaluation time), in place.

        The new encoding must match ``n_heads`` and ``head_dim``; if it has learned parameters, their
        names and shapes must match the current encoding's (values are the caller's responsibility).
        It is moved to the model's device. ``model.config`` still describes the trained model.
        """
        if not isinstance(encoding, PositionalEncoding):
            raise ValueError(f"encoding must be a PositionalEncoding, got {type(encoding).__name__}")
        if (encoding.n_heads, encoding.head_dim) != (self.config.n_heads, self.config.head_dim):
            raise ValueError(
                f"encoding has n_heads={encoding.n_heads}, head_dim={encoding.head_dim}; the model needs "
                f"n_heads={self.config.n_heads}, head_dim={self.config.head_dim}"
            )
        new = {n: tuple(p.shape) for n, p in encoding.named_parameters()}
        old = {n: tuple(p.shape) for n, p in self.encoding.named_parameters()}
        if new and new != old:
            raise ValueError(f"the new encoding's learned parameters {new} do not match the current encoding's {old}")
        device = self.tok_emb.weight.device
        self.encoding = encoding.to(device)

    # -- forward --------------------------------------------------------------------------------
    def forward(
        self,
        idx: torch.Tensor,
        *,
        kv_cache: KVCache | None = None,
        return_attention: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits ``(B, T, V)`` float32 for token ids ``idx`` ``(B, T)`` long.

        With ``kv_cache``, ``idx`` continues the cached tokens (positions start at ``len(kv_cache)``)
        and the cache is extended. With ``return_attention=True`` returns ``(logits, attn)``, ``attn``
        a list (one per layer) of ``(B, H, T, Tk)`` attention weights.
        """
        if not isinstance(idx, torch.Tensor) or idx.dim() != 2 or idx.dtype != torch.long:
            got = f"{tuple(idx.shape)} {idx.dtype}" if isinstance(idx, torch.Tensor) else type(idx).__name__
            raise ValueError(f"idx must be a (B, T) torch.long tensor with T >= 1, got {got}")
        B, T = idx.shape
        if T < 1 or B < 1:
            raise ValueError(f"idx must have B >= 1 and T >= 1, got shape {tuple(idx.shape)}")
        if kv_cache is not None and kv_cache.n_layers != self.config.n_layers:
            raise ValueError(f"kv_cache has {kv_cache.n_layers} layers, the model {self.config.n_layers}")
        lo_id, hi_id = (int(v) for v in torch.aminmax(idx))  # one pass: a clear error, not an IndexError
        if lo_id < 0 or hi_id >= self.config.vocab_size:
            bad = lo_id if lo_id < 0 else hi_id
            raise ValueError(
                f"token id {bad} is out of range: ids must be in [0, vocab_size) = [0, {self.config.vocab_size})"
            )
        enc = self.encoding
        offset = 0 if kv_cache is None else len(kv_cache)
        if enc.max_positions is not None and offset + T > enc.max_positions:
            raise ValueError(
                f"sequence of {offset + T} tokens exceeds the {enc.name!r} encoding's max_positions={enc.max_positions}"
            )
        device = idx.device
        q_pos = enc.positions(T, offset, device)  # (T,) or (B, T) long
        k_pos = q_pos if kv_cache is None else kv_cache.extend_positions(q_pos)  # (Tk,) or (B, Tk)
        Tk = offset + T

        # one mask for every layer: causal (cache index order) + the encoding's additive bias
        bias = enc.bias(q_pos, k_pos)  # (H, T, Tk) / (B, H, T, Tk) / None
        if bias is not None and bias.shape[-3] != self.config.n_heads:
            raise ValueError(
                f"the {enc.name!r} encoding's bias has {bias.shape[-3]} heads (encoding n_heads={enc.n_heads}) "
                f"but the model's attention has n_heads={self.config.n_heads}; build the encoding with "
                f"n_heads={self.config.n_heads}"
            )
        is_causal = False
        if bias is not None:
            mask = bias.float().masked_fill(~_causal_bool(T, Tk, offset, device), float("-inf"))
            if mask.dim() == 3:
                mask = mask.unsqueeze(0)  # (1, H, T, Tk): a 3-D float mask sends CPU SDPA to its slow math path
        elif offset == 0 and T > 1:
            mask, is_causal = None, True  # fast path
        elif T > 1:
            mask = _causal_bool(T, Tk, offset, device)  # (T, Tk) bool
        else:
            mask = None  # one new token attends to every cached key

        x = self.tok_emb(idx)  # (B, T, C)
        x = enc.embed(x, q_pos)  # (B, T, C)
        x = self.drop(x)
        attns: list[torch.Tensor] = []
        for i, block in enumerate(self.blocks):
            x, attn = block(
                x,
                encoding=enc,
                q_positions=q_pos,
                k_positions=k_pos,
                mask=mask,
                is_causal=is_causal,
                kv_cache=kv_cache,
                layer=i,
                return_attention=return_attention,
            )
            if return_attention:
                attns.append(attn)
        x = self.ln_f(x)  # (B, T, C)
        logits = self.head(x).float()  # (B, T, V)
        return (logits, attns) if return_attention else logits

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        greedy: bool = True,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Continue ``idx`` (B, T) by ``max_new_tokens`` tokens with a KV cache; returns (B, T + n).

        ``greedy=True`` takes the argmax; otherwise samples from softmax(logits / temperature).
        """
        _check_int("max_new_tokens", max_new_tokens, 0)
        if not greedy and not (isinstance(temperature, (int, float)) and temperature > 0):
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        if max_new_tokens == 0:
            return idx
        cache = KVCache(self.config.n_layers)
        logits = self(idx, kv_cache=cache)[:, -1]  # (B, V)
        out = [idx]
        for step in range(max_new_tokens):
            if greedy:
                nxt = logits.argmax(dim=-1, keepdim=True)  # (B, 1)
            else:
                probs = torch.softmax(logits / temperature, dim=-1)  # (B, V)
                nxt = torch.multinomial(probs, 1, generator=generator)  # (B, 1)
            out.append(nxt)
            if step + 1 < max_new_tokens:
                logits = self(nxt, kv_cache=cache)[:, -1]  # (B, V)
        return torch.cat(out, dim=1)  # (B, T + max_new_tokens)
