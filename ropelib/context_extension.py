"""Context extension of a trained RoPE model, by the protocols of the papers (notebook 06).

A method changes a trained model's rotation frequencies (HF rope keys, ``ropelib.rope_scaling``) so that inputs
``s`` times longer than its training length ``L`` look more like what it saw; some also say *how* the
model is run. This module holds, one record per method (``METHODS``), everything that varies:

* the HF rope keys at factor ``s`` (``method_keys``), and whether they depend on ``s`` at all;
* the **protocol** the model is scored with (``PROTOCOLS``), which matters for dynamic NTK only:

  - ``window``: the whole window in one forward pass. With ``rope_type="dynamic"`` every position of a
    window of ``n`` tokens then gets the frequencies for length ``n`` (HF's behaviour for a prompt
    processed at once, a "prefill").
  - ``hf_cache``: as a model *generates* with HF transformers' KV cache. HF caches keys after rotation
    and recomputes the dynamic base when the sequence grows (``dynamic_rope_update``), so the token at
    position ``p`` is rotated, as query and as key, with the frequencies for length ``max(p + 1, L)``
    and keeps them (transformers issue #25104, left open for speed). ``HFCacheRoPE`` reproduces this
    in one forward pass; ``tests/test_context_extension.py`` checks its tables against HF's module
    step by step.
  - ``recompute``: as a model generates with keys cached *before* rotation (``ropelib.model.KVCache``,
    GPT-NeoX, NormXU's consistent dynamic NTK): at each step every key is rotated again with the
    current length's frequencies. The hidden states of earlier tokens (and so the keys and values of
    later layers) are still those computed at their own step. ``RecomputeDecoder`` scores a window this
    way, token by token.

HF's ``factor`` for dynamic NTK: the base at input length ``l > L`` is ``b (s l / L - (s - 1))^(d/(d-2))``
(``ropelib.rope_scaling``), so with ``factor = s`` the scale at ``l = sL`` is ``s^2 - s + 1``, not ``s``
(``dynamic*`` methods); with ``factor = 1`` it is ``l / L``, the NTK-aware scale for exactly the current
length (``dynamic_f1``).

Further, for the other rows of notebook 06:

* **YaRN's temperature** (Peng et al. 2023, arXiv 2309.00071, §3.4): cos and sin are multiplied by
  ``sqrt(1/t) = 0.1 ln s + 1``, a fit for LLaMA; ``method_keys("yarn", ..., temperature=c)`` sets
  ``attention_factor = 1 + c ln s`` to sweep the coefficient (``c = 0.1``: the paper's).
* **LongRoPE** (Ding et al. 2024, arXiv 2402.13753, §3): per-pair rescale factors ``lambda_i``
  (``theta_i' = theta_i / lambda_i``) found by a search on validation perplexity. Here the search is
  reduced to a two-parameter monotone family (``longrope_factors``: pairs up to ``lo`` kept, pairs from
  ``hi`` on divided by ``s``, a geometric ramp between), searched exhaustively (``longrope_search``);
  the paper's evolutionary search and its unscaled initial positions are not reproduced. Inputs up to
  ``L`` use ``short_factor = 1`` (HF switches to ``long_factor`` past ``L``), so the frequencies at ``L``
  are the original ones; HF's attention factor ``sqrt(1 + ln s / ln L)`` (from Phi-3's code) applies at
  every length and is LongRoPE's only cost at ``L``.
* **p-RoPE** (Barbero et al. 2024, arXiv 2410.06205, §5) applied to a model trained with full RoPE: the
  slowest ``1 - p`` of the frequencies set to zero (``rope_type="proportional"``), whatever ``s``.
  Notebook 08 trains p-RoPE models from scratch.
* **Fine-tuning budgets as fractions of pre-training** (``finetune_spec``): a run that starts from the
  base model at ``s L``, for ``fraction`` of the base model's pre-training tokens, with a linear warm-up
  and a cosine decay, AdamW restarted, no weight decay (PI §3.1), and a peak learning rate of the base
  model's times PI's ratio (``PI_FINETUNE``: 2e-5 for LLaMA-7B, whose pre-training peak was 3e-4).
  ``pi_budget_fraction()`` is PI's own budget relative to pre-training: 1000 steps of 64 × 8192 tokens
  after LLaMA-7B's 1.0T tokens, about 0.05 %.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pandas as pd
import torch
from torch import nn

from .analysis import tiny_yarn_params
from .encodings.rope import RoPEEncoding
from .evaluate import lm_loss_at_lengths, with_rope_scaling
from .model import KVCache, ModelConfig
from .rope import apply_rotary
from .runs import RunSpec
from .train import TrainConfig

__all__ = [
    "PROTOCOLS",
    "ExtensionMethod",
    "METHODS",
    "PI_FINETUNE",
    "method_keys",
    "extend",
    "HFCacheRoPE",
    "RecomputeDecoder",
    "yarn_attention_factor",
    "longrope_factors",
    "longrope_candidates",
    "longrope_search",
    "pi_budget_fraction",
    "pretraining_tokens",
    "finetune_steps_for",
    "finetune_spec",
]

#: how a model is scored (module docstring)
PROTOCOLS: Mapping[str, str] = {
    "window": "the whole window in one forward pass (a prefill)",
    "hf_cache": "generation with HF's KV cache: keys rotated once, with the frequencies of their own step",
    "recompute": "generation with keys cached before rotation: all keys re-rotated at every step",
}

KeysFn = Callable[..., "dict[str, Any] | None"]


@dataclasses.dataclass(frozen=True)
class ExtensionMethod:
    """One context-extension method: its HF rope keys at factor ``s`` and how the model is scored.

    ``keys(s, L, head_dim, base, **options)`` returns the HF rope keys (``None``: plain RoPE).
    ``uses_factor``: whether the keys depend on ``s`` (plain RoPE, p-RoPE and ``dynamic_f1`` do not, so
    they are evaluated once, at every length). ``finetunable``: whether the keys can be trained in (a
    fixed frequency set; not the length-dependent protocols).
    """

    name: str
    title: str
    source: str
    keys: KeysFn
    protocol: str = "window"
    uses_factor: bool = True
    finetunable: bool = True

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {self.protocol!r}; known: {', '.join(PROTOCOLS)}")


def yarn_attention_factor(s: float, coefficient: float = 0.1) -> float:
    """YaRN's ``sqrt(1/t) = coefficient * ln(s) + 1`` (§3.4; the paper's coefficient is 0.1); 1 for ``s <= 1``."""
    if not isinstance(coefficient, (int, float)) or isinstance(coefficient, bool) or coefficient < 0:
        raise ValueError(f"temperature coefficient must be a number >= 0, got {coefficient!r}")
    return 1.0 if s <= 1 else 1.0 + float(coefficient) * math.log(s)


def _plain(s, L, d, b):
    return None


def _linear(s, L, d, b):
    return {"rope_type": "linear", "rope_theta": b, "factor": s}


def _ntk(s, L, d, b):
    return {"rope_type": "ntk", "rope_theta": b, "factor": s}


def _dynamic(s, L, d, b):
    return {"rope_type": "dynamic", "rope_theta": b, "factor": s, "max_position_embeddings": L}


def _dynamic_f1(s, L, d, b):
    return {"rope_type": "dynamic", "rope_theta": b, "factor": 1.0, "max_position_embeddings": L}


def _yarn(s, L, d, b, temperature: float | None = None):
    keys = {
        "rope_type": "yarn",
        "rope_theta": b,
        "factor": s,
        "original_max_position_embeddings": L,
        "beta_fast": 32.0,
        "beta_slow": 1.0,
    }
    if temperature is not None:
        keys["attention_factor"] = yarn_attention_factor(s, temperature)
    return keys


def _yarn_rescaled(s, L, d, b):
    return tiny_yarn_params(d, b, L, s)  # the ramp rescaled by pair fraction (an ablation)


def _llama3(s, L, d, b):
    return {
        "rope_type": "llama3",
        "rope_theta": b,
        "factor": s,
        "original_max_position_embeddings": L,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
    }


def _longrope(s, L, d, b, ramp: tuple[float, float] | None = None):
    if ramp is None:
        raise ValueError("longrope needs its searched factors: pass ramp=(lo, hi) (see longrope_search)")
    n = d // 2
    return {
        "rope_type": "longrope",
        "rope_theta": b,
        "factor": s,
        "original_max_position_embeddings": L,
        "short_factor": [1.0] * n,
        "long_factor": longrope_factors(n, s, *ramp),
    }


def _p_rope(p: float) -> KeysFn:
    def keys(s, L, d, b):
        return {"rope_type": "proportional", "rope_theta": b, "partial_rotary_factor": p}

    return keys


_PI = "Chen et al. 2023, arXiv 2306.15595"
_YARN = "Peng et al. 2023, arXiv 2309.00071"
#: name -> method (module docstring)
METHODS: Mapping[str, ExtensionMethod] = {
    m.name: m
    for m in (
        ExtensionMethod("none", "plain RoPE", "Su et al. 2021, arXiv 2104.09864", _plain, uses_factor=False),
        ExtensionMethod("linear", "PI (position interpolation)", f"{_PI}, §2.3", _linear),
        ExtensionMethod("ntk", "NTK-aware base", f"bloc97 2023; {_YARN}, §3.1", _ntk),
        ExtensionMethod(
            "dynamic", "dynamic NTK, whole window", f"{_YARN}, §3.3; HF dynamic", _dynamic, finetunable=False
        ),
        ExtensionMethod(
            "dynamic_cache",
            "dynamic NTK, HF KV cache",
            "HF dynamic_rope_update; transformers #25104",
            _dynamic,
            protocol="hf_cache",
            finetunable=False,
        ),
        ExtensionMethod(
            "dynamic_recompute",
            "dynamic NTK, keys re-rotated",
            "GPT-NeoX / NormXU consistent NTK",
            _dynamic,
            protocol="recompute",
            finetunable=False,
        ),
        ExtensionMethod(
            "dynamic_f1",
            "dynamic NTK, factor 1, keys re-rotated",
            f"{_YARN}, §3.3 (scale l/L)",
            _dynamic_f1,
            protocol="recompute",
            uses_factor=False,
            finetunable=False,
        ),
        ExtensionMethod("yarn", "YaRN (β = 32, 1)", f"{_YARN}, §3.2-3.4", _yarn),
        ExtensionMethod(
            "yarn_rescaled", "YaRN, ramp rescaled by pair fraction", "ropelib.analysis.tiny_yarn_params", _yarn_rescaled
        ),
        ExtensionMethod("llama3", "Llama 3.1 bands", "Meta llama-models apply_scaling", _llama3),
        ExtensionMethod("longrope", "LongRoPE (searched ramp)", "Ding et al. 2024, arXiv 2402.13753, §3", _longrope),
        ExtensionMethod(
            "p_rope_0.75",
            "p-RoPE p = 0.75 (zero-shot)",
            "Barbero et al. 2024, arXiv 2410.06205, §5",
            _p_rope(0.75),
            uses_factor=False,
        ),
        ExtensionMethod(
            "p_rope_0.5",
            "p-RoPE p = 0.5 (zero-shot)",
            "Barbero et al. 2024, arXiv 2410.06205, §5",
            _p_rope(0.5),
            uses_factor=False,
        ),
    )
}


def _method(name: str) -> ExtensionMethod:
    if name not in METHODS:
        raise ValueError(f"unknown context-extension method {name!r}; known: {', '.join(METHODS)}")
    return METHODS[name]


def method_keys(name: str, s: float, train_length: int, head_dim: int, base: float, **options: Any) -> dict | None:
    """HF rope keys of method ``name`` at factor ``s`` for a model trained at ``train_length`` (``None``:
    plain RoPE). ``options``: ``temperature`` (``yarn``: the attention-factor coefficient), ``ramp``
    (``longrope``: ``(lo, hi)`` of ``longrope_factors``)."""
    method = _method(name)
    if not isinstance(s, (int, float)) or isinstance(s, bool) or not s >= 1:
        raise ValueError(f"factor s must be a number >= 1, got {s!r}")
    return method.keys(float(s), int(train_length), int(head_dim), float(base), **options)


def extend(model: nn.Module, name: str, s: float, train_length: int, **options: Any) -> nn.Module:
    """``model`` (a RoPE ``ToyTransformer``) with method ``name`` at factor ``s``, set up for its protocol:
    a scaled copy (``window``), a copy whose encoding is ``HFCacheRoPE`` (``hf_cache``), or a
    ``RecomputeDecoder`` around the scaled copy (``recompute``). Plain RoPE: the model itself."""
    method = _method(name)
    encoding = getattr(model, "encoding", None)
    if getattr(encoding, "name", None) != "rope":
        raise ValueError(
            f"context extension needs a RoPE model; this model's encoding is {getattr(encoding, 'name', None)!r}"
        )
    rope = encoding.rope
    keys = method_keys(name, s, train_length, rope.head_dim, rope.config.rope_theta, **options)
    out = model if keys is None else with_rope_scaling(model, **keys)
    if method.protocol == "hf_cache":
        out = out if out is not model else copy.deepcopy(model)
        out.replace_encoding(HFCacheRoPE.from_encoding(out.encoding))
    elif method.protocol == "recompute":
        out = RecomputeDecoder(out, prefill=int(train_length))
    return out


class HFCacheRoPE(RoPEEncoding):
    """RoPE as HF applies it while generating with its KV cache: the token at position ``p`` is rotated,
    as query and as key, with the frequencies for length ``max(p + 1, L)`` (keys keep the rotation of
    their own step). For types whose frequencies do not depend on the length this equals ``RoPEEncoding``.
    One forward pass over a window gives what token-by-token generation would."""

    @classmethod
    def from_encoding(cls, encoding: RoPEEncoding) -> HFCacheRoPE:
        return cls(n_heads=encoding.n_heads, head_dim=encoding.head_dim, d_model=encoding.d_model, **encoding.params)

    def _per_position(self, n: int, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        cache = getattr(self, "_per_position_tables", None)
        if cache is None:
            cache = self._per_position_tables = {}
        key = (n, dtype, device)
        if key not in cache:
            rows, factors = [], []
            for p in range(n):
                inv_freq, attention = self.rope.frequencies(p + 1)  # the step that adds token p has length p + 1
                rows.append(inv_freq.to(torch.float64))
                factors.append(attention)
            inv = torch.stack(rows)  # (n, d_rot/2) float64
            angle = torch.arange(n, dtype=torch.float64)[:, None] * inv  # (n, d_rot/2)
            scale = torch.tensor(factors, dtype=torch.float64)[:, None]  # (n, 1)
            cache[key] = ((torch.cos(angle) * scale).to(device), (torch.sin(angle) * scale).to(device))
        return cache[key]

    def rotate(self, q, k, q_positions, k_positions):
        """Rotate ``q`` (B, H, Tq, D) and ``k`` (B, H, Tk, D), each position with its own step's frequencies."""
        if q_positions.dim() != 1 or k_positions.dim() != 1:
            raise ValueError("HFCacheRoPE takes shared (T,) positions, not per-sequence (B, T) ones")
        n = int(k_positions.max()) + 1
        cos, sin = self._per_position(n, torch.float64, q.device)
        rot_q = apply_rotary(q, cos[q_positions], sin[q_positions], self.rope.layout)  # (B, H, Tq, D)
        rot_k = apply_rotary(k, cos[k_positions], sin[k_positions], self.rope.layout)  # (B, H, Tk, D)
        return rot_q, rot_k


class RecomputeDecoder(nn.Module):
    """Scores a window as a model generating with keys cached before rotation (``ropelib.model.KVCache``):
    the first ``prefill`` tokens in one pass, then one token per step, every cached key rotated again
    with the current length's frequencies (earlier tokens' hidden states are not recomputed).
    ``forward(idx)`` returns the logits ``(B, T, V)`` of all steps. Every evaluation of ``ropelib.evaluate`` accepts it in place of the model."""

    def __init__(self, model: nn.Module, prefill: int) -> None:
        super().__init__()
        if isinstance(prefill, bool) or not isinstance(prefill, int) or prefill < 1:
            raise ValueError(f"prefill must be a positive integer (the training length), got {prefill!r}")
        self.model = model
        self.prefill = prefill

    @property
    def config(self) -> ModelConfig:
        return self.model.config

    @property
    def encoding(self):
        return self.model.encoding

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        cache = KVCache(self.model.config.n_layers)
        first = min(self.prefill, idx.shape[1])
        out = [self.model(idx[:, :first], kv_cache=cache)]  # (B, first, V)
        for t in range(first, idx.shape[1]):
            out.append(self.model(idx[:, t : t + 1], kv_cache=cache))  # (B, 1, V)
        return torch.cat(out, dim=1)  # (B, T, V)


# -- LongRoPE ------------------------------------------------------------------------------------------
def longrope_factors(n_pairs: int, s: float, lo: float, hi: float) -> list[float]:
    """Per-pair rescale factors ``lambda_i = s ** clip((i - lo) / (hi - lo), 0, 1)``, ``i = 0 … n_pairs-1``:
    pairs ``i <= lo`` kept (1), pairs ``i >= hi`` interpolated (``s``), a geometric ramp between;
    monotone in ``i`` as LongRoPE's search constrains it (slower pairs interpolated at least as much)."""
    if isinstance(n_pairs, bool) or not isinstance(n_pairs, int) or n_pairs < 1:
        raise ValueError(f"n_pairs must be a positive integer, got {n_pairs!r}")
    if not hi > lo:
        raise ValueError(f"the ramp needs hi > lo, got lo={lo!r}, hi={hi!r}")
    return [float(s) ** min(1.0, max(0.0, (i - lo) / (hi - lo))) for i in range(n_pairs)]


def longrope_candidates(n_pairs: int) -> list[tuple[int, int]]:
    """Every ramp ``(lo, hi)`` with ``-1 <= lo < hi <= n_pairs`` (``(-1, 0)``: every pair divided by ``s``,
    PI; ``(n_pairs - 1, n_pairs)``: every pair kept, plain RoPE)."""
    return [(lo, hi) for lo, hi in itertools.combinations(range(-1, n_pairs + 1), 2)]


def longrope_search(
    model: nn.Module,
    tokens: torch.Tensor,
    s: float,
    train_length: int,
    *,
    max_windows: int,
    candidates: Sequence[tuple[int, int]] | None = None,
) -> pd.DataFrame:
    """LongRoPE's search, reduced to ``longrope_candidates``: the loss of every ramp at ``s * L`` over the
    first ``max_windows`` non-overlapping windows of ``tokens`` (the **validation** split: the test split
    is for reporting). Returns ``lo, hi, loss, ppl, chosen`` (``chosen``: the lowest loss; ties: the
    first candidate)."""
    n_pairs = model.encoding.rope.rotary_dim // 2
    cands = list(candidates) if candidates is not None else longrope_candidates(n_pairs)
    if not cands:
        raise ValueError("longrope_search needs at least one candidate ramp")
    length = int(round(s * train_length))
    rows = []
    for lo, hi in cands:
        scored = extend(model, "longrope", s, train_length, ramp=(lo, hi))
        row = lm_loss_at_lengths(scored, tokens, [length], max_windows=max_windows).iloc[0]
        rows.append({"lo": lo, "hi": hi, "loss": float(row["loss"]), "ppl": float(row["ppl"])})
    out = pd.DataFrame(rows)
    out["chosen"] = False
    out.loc[out["loss"].idxmin(), "chosen"] = True
    return out


# -- fine-tuning budgets -------------------------------------------------------------------------------
#: PI's fine-tune (Chen et al. 2023, arXiv 2306.15595, §3.1) and the pre-training it follows (LLaMA-7B,
#: Touvron et al. 2023, arXiv 2302.13971, §2 and Table 2: 1.0T tokens, peak learning rate 3e-4)
PI_FINETUNE: Mapping[str, Any] = {
    "steps": 1000,
    "batch_size": 64,
    "length": 8192,
    "lr": 2e-5,
    "warmup_steps": 20,
    "weight_decay": 0.0,
    "pretraining_tokens": 1.0e12,
    "pretraining_lr": 3e-4,
    "source": "Chen et al. 2023 (PI), arXiv 2306.15595 §3.1; LLaMA-7B pre-training: Touvron et al. 2023, arXiv 2302.13971",
}


def pi_budget_fraction() -> float:
    """PI's fine-tuning tokens as a fraction of LLaMA-7B's pre-training tokens (about 5.2e-4)."""
    p = PI_FINETUNE
    return p["steps"] * p["batch_size"] * p["length"] / p["pretraining_tokens"]


def pretraining_tokens(spec) -> int:
    """Training tokens of a run (``steps × batch_size × seq_len``), its parents' not counted."""
    return int(spec.train.steps * spec.train.batch_size * spec.train.seq_len)


def finetune_steps_for(fraction: float, pretrain_tokens: int, batch_size: int, seq_len: int) -> int:
    """Steps of ``batch_size × seq_len`` tokens closest to ``fraction × pretrain_tokens`` (at least 1)."""
    if not isinstance(fraction, (int, float)) or isinstance(fraction, bool) or not 0 < fraction <= 1:
        raise ValueError(f"fine-tuning fraction must be in (0, 1] of the pre-training tokens, got {fraction!r}")
    return max(1, round(fraction * pretrain_tokens / (batch_size * seq_len)))


def finetune_spec(
    base_spec,
    keys: Mapping[str, Any] | None,
    *,
    factor: float,
    fraction: float,
    batch_size: int,
    lr_ratio: float | None = None,
    warmup_fraction: float | None = None,
    min_lr_ratio: float = 0.1,
    device: str = "auto",
):
    """The run that fine-tunes ``base_spec``'s model at ``factor × L`` with the rope ``keys`` built in, for
    ``fraction`` of the base model's training tokens (``finetune_steps_for``).

    Schedule (PI §3.1, with a decay as the protocol asks): peak learning rate ``lr_ratio ×`` the base
    model's (default PI's 2e-5 / 3e-4), a linear warm-up over ``warmup_fraction`` of the steps (default
    PI's 20 / 1000; at least one step), a cosine decay to ``min_lr_ratio`` of the peak, no weight decay,
    fresh AdamW moments; fresh batches (seed ``base_seed * 100000 + steps``). ``parent`` is the base run,
    so the cache keeps each budget's run apart and reads it back.
    """
    lr_ratio = PI_FINETUNE["lr"] / PI_FINETUNE["pretraining_lr"] if lr_ratio is None else float(lr_ratio)
    warmup_fraction = PI_FINETUNE["warmup_steps"] / PI_FINETUNE["steps"] if warmup_fraction is None else warmup_fraction
    if not 0 < lr_ratio <= 10:
        raise ValueError(f"lr_ratio must be in (0, 10], got {lr_ratio!r}")
    if not 0 <= warmup_fraction <= 1:
        raise ValueError(f"warmup_fraction must be in [0, 1], got {warmup_fraction!r}")
    seq_len = int(round(factor * base_spec.train.seq_len))
    steps = finetune_steps_for(fraction, pretraining_tokens(base_spec), batch_size, seq_len)
    model = ModelConfig.from_dict(
        {**base_spec.model.to_dict(), "encoding_params": {**base_spec.model.encoding_params, **(keys or {})}}
    )
    train = TrainConfig.from_dict(
        {
            **base_spec.train.to_dict(),
            "steps": steps,
            "batch_size": batch_size,
            "seq_len": seq_len,
            "lr": base_spec.train.lr * lr_ratio,
            "min_lr_ratio": min_lr_ratio,
            "warmup_steps": min(steps, max(1, round(warmup_fraction * steps))),
            "weight_decay": 0.0,
            "checkpoint_every": 0,
            "eval_every": 0,
            "seed": base_spec.train.seed * 100_000 + steps,
            "device": device,
        }
    )
    return RunSpec(model=model, task=base_spec.task, train=train, parent=base_spec)
