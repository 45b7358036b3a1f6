"""Rotary positional embedding (RoPE) and its context-extension family, numerically equal to HF transformers.

RoPE: Su et al. 2021, RoFormer, arXiv 2104.09864, §3.4 (eq. 13-16): pair ``i`` of a query/key vector at
integer position ``m`` is turned by the angle ``m * theta_i``, ``theta_i = b^(-2i/d)``.
Scaling variants (docs/references.md §3), one frequency function each in the registry ``ROPE_TYPES``, keyed
by HF transformers' ``rope_type`` names and computing the same float32 values as
``transformers/modeling_rope_utils.py`` (v5.24.0):

* ``default``      RoFormer frequencies.
* ``linear``       Position Interpolation, Chen et al. 2023, arXiv 2306.15595 §2.3: ``theta_i / s``.
* ``ntk``          static NTK-aware scaling (bloc97 2023; YaRN arXiv 2309.00071 §3.1):
                   base ``b' = b * s^(d/(d-2))``. Not in HF 5.24; equals HF ``dynamic`` with factor 1 at
                   length ``s * L``.
* ``dynamic``      dynamic NTK (YaRN §3.3; HF): ``b' = b * (s*l/L - (s-1))^(d/(d-2))``, ``l = max(l, L)``.
* ``yarn``         NTK-by-parts ramp + attention factor, Peng et al. 2023, arXiv 2309.00071 §3.2-3.4
                   (DeepSeek-V2 ``mscale`` / ``mscale_all_dim`` variant of the attention factor).
* ``llama3``       Meta Llama 3.1 wavelength-band scaling (llama-models ``apply_scaling``).
* ``longrope``     per-pair factors, Ding et al. 2024, arXiv 2402.13753 §3; Phi-3 attention factor.
* ``proportional`` p-RoPE, Barbero et al. 2024, arXiv 2410.06205 §5: keep the highest fraction ``p``
                   (``partial_rotary_factor``) of the frequencies, zero the rest.

Configs are plain mappings with HF's keys (``RopeConfig.from_mapping`` validates them into a frozen
dataclass). ``rope_frequencies(config, head_dim, seq_len)`` returns ``(inv_freq, attention_factor)``.
``RoPE.from_hf_config`` also takes a whole transformers model config (the object, its ``to_dict()`` or a
``config.json`` dict) and reads the rope mapping, ``rope_theta``, the head size and partial rotary from it.

``RoPE`` applies the rotation in either layout (docs/references.md §1.2):

* ``"half"``        pair ``i`` = coordinates ``(i, i + d_rot/2)``: GPT-NeoX / HF ``apply_rotary_pos_emb``.
* ``"interleaved"`` pair ``i`` = coordinates ``(2i, 2i+1)``: RoFormer paper, Meta LLaMA (complex multiply).

Precision: angles are computed in float64 from the integer positions and the float32 frequencies, and
only cos/sin (times the attention factor) are cast to the compute dtype, so bf16 inputs and positions
near 2^20 stay exact (HF's float32 product ``position * inv_freq`` errs by about 1e-2 rad there).
Positions are integer tensors and never pass through a reduced-precision float.

Deliberate differences from HF's ``*RotaryEmbedding`` modules (the frequencies themselves are equal):
the ``dynamic`` frequencies depend only on the current ``seq_len`` (HF keeps grown frequencies until the
input drops below the original length: for an input between ``L`` and an earlier longer one it reuses
the longer one's); and configs that HF only warns about (``factor < 1``, wrong-length LongRoPE factors,
missing ``original_max_position_embeddings``) raise ``ValueError`` here.
"""

from __future__ import annotations

import dataclasses
import math
from collections import OrderedDict
from typing import Any, Callable, Mapping

import torch
from torch import nn

__all__ = [
    "ROPE_TYPES",
    "LAYOUTS",
    "RopeConfig",
    "rope_frequencies",
    "RoPE",
    "apply_rotary",
    "interleaved_to_half",
    "half_to_interleaved",
]

#: the two pair layouts (module docstring)
LAYOUTS = ("half", "interleaved")

#: largest position accepted: float64 holds every integer up to 2^53 exactly (angles are float64)
MAX_EXACT_POSITION = 2**53
#: ``RoPE`` tabulates cos/sin for the whole span min..max of the positions (cached; contiguous ranges
#: use it as is) unless the span exceeds both this many rows and this ratio times the number of
#: positions; then only the given positions' angles are computed (cost proportional to their number)
_DIRECT_MIN_SPAN = 2**16
_DIRECT_SPAN_RATIO = 4


# ---------------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class RopeConfig:
    """A validated RoPE config with HF transformers' key names (``rope_parameters`` in HF v5).

    Every field but ``rope_theta`` and ``rope_type`` defaults to ``None`` ("not given"). Fields a
    ``rope_type`` does not use are ignored (as HF does). What each type *requires*:

    * ``linear``, ``ntk``, ``dynamic``, ``yarn``, ``llama3``: ``factor`` (>= 1).
    * ``dynamic``: the length the model was trained at, as ``max_position_embeddings`` (HF's name for
      it with this type) or, if that is absent, ``original_max_position_embeddings``.
    * ``yarn``, ``llama3``, ``longrope``: ``original_max_position_embeddings`` (the pre-training
      length). HF silently falls back to ``max_position_embeddings``, which for a scaled model is the
      *extended* length, and then computes YaRN's correction range / Llama 3's bands / LongRoPE's
      switch from the wrong length (a known bug class); ropelib requires it explicitly instead.
    * ``llama3``: ``low_freq_factor`` < ``high_freq_factor``.
    * ``longrope``: ``short_factor`` and ``long_factor`` (``rotary_dim // 2`` positive numbers each);
      ``factor`` if given, else inferred as ``max_position_embeddings / original_max_position_embeddings``
      like HF (needed only when ``attention_factor`` is not given).
    """

    rope_theta: float = 10000.0
    rope_type: str = "default"
    factor: float | None = None
    original_max_position_embeddings: int | None = None
    max_position_embeddings: int | None = None
    beta_fast: float | None = None
    beta_slow: float | None = None
    mscale: float | None = None
    mscale_all_dim: float | None = None
    truncate: bool | None = None
    attention_factor: float | None = None
    low_freq_factor: float | None = None
    high_freq_factor: float | None = None
    short_factor: tuple[float, ...] | None = None
    long_factor: tuple[float, ...] | None = None
    partial_rotary_factor: float | None = None

    def __post_init__(self) -> None:
        for name in ("short_factor", "long_factor"):  # lists -> tuples, so the config stays hashable
            value = getattr(self, name)
            if value is not None and not isinstance(value, tuple):
                if isinstance(value, torch.Tensor):
                    value = value.tolist()
                if not isinstance(value, (list, tuple)):
                    raise ValueError(f"{name} must be a list of numbers, got {value!r}")
                object.__setattr__(self, name, tuple(value))
        _validate_config(self)

    @classmethod
    def from_mapping(cls, config: Mapping[str, Any] | "RopeConfig") -> "RopeConfig":
        """Build from a plain mapping with HF keys; the legacy key ``type`` is read as ``rope_type``.

        Keys whose value is ``None`` count as absent. An unknown key raises ``ValueError`` listing the
        accepted keys.
        """
        if isinstance(config, RopeConfig):
            return config
        if not isinstance(config, Mapping):
            raise ValueError(f"RoPE config must be a mapping with HF keys, got {type(config).__name__}")
        items = {k: v for k, v in config.items() if v is not None}
        if "type" in items:
            legacy = items.pop("type")
            if "rope_type" in items and items["rope_type"] != legacy:
                raise ValueError(
                    f"conflicting RoPE type keys: rope_type={items['rope_type']!r} and legacy type={legacy!r}"
                )
            items["rope_type"] = legacy
        allowed = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(items) - set(allowed))
        if unknown:
            raise ValueError(
                f"unknown RoPE config key(s) {', '.join(map(repr, unknown))}; accepted: {', '.join(allowed)} "
                "(and the legacy 'type')"
            )
        return cls(**items)

    def replace(self, **changes: Any) -> "RopeConfig":
        """A copy with some keys changed (``None`` clears a key back to its default), re-validated."""
        merged = {**self.as_dict(), **changes}
        return RopeConfig.from_mapping(merged)

    def as_dict(self) -> dict[str, Any]:
        """The keys that are set, as a plain dict with HF key names (tuples become lists)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is not None:
                out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    def rotary_dim(self, head_dim: int) -> int:
        """Number of leading head coordinates that are rotated (``head_dim`` for ``proportional``)."""
        _check_head_dim(head_dim)
        if self.rope_type == "proportional":
            return head_dim
        rd = int(head_dim * (self.partial_rotary_factor if self.partial_rotary_factor is not None else 1.0))
        if rd < 2 or rd % 2:
            raise ValueError(
                f"rotary dimension int(head_dim * partial_rotary_factor) = int({head_dim} * "
                f"{self.partial_rotary_factor}) = {rd} must be even and >= 2"
            )
        return rd

    def original_length(self) -> int | None:
        """The training length the type's scaling is relative to (``None`` for unscaled types)."""
        if self.rope_type == "dynamic":
            return self.max_position_embeddings or self.original_max_position_embeddings
        if self.rope_type in ("yarn", "llama3", "longrope"):
            return self.original_max_position_embeddings
        return None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_head_dim(head_dim: Any) -> None:
    if not isinstance(head_dim, int) or isinstance(head_dim, bool) or head_dim < 2 or head_dim % 2:
        raise ValueError(f"head_dim must be an even integer >= 2 (RoPE rotates pairs), got {head_dim!r}")


def _require(config: RopeConfig, *names: str, why: str = "") -> None:
    missing = [n for n in names if getattr(config, n) is None]
    if missing:
        raise ValueError(
            f"rope_type {config.rope_type!r} requires {', '.join(map(repr, missing))}, which is missing"
            + (f": {why}" if why else "")
        )


def _validate_config(c: RopeConfig) -> None:
    if c.rope_type not in ROPE_TYPES:
        raise ValueError(f"unknown rope_type {c.rope_type!r}; known: {', '.join(ROPE_TYPES)}")
    if not _is_number(c.rope_theta) or c.rope_theta <= 1:
        raise ValueError(f"rope_theta must be a number > 1, got {c.rope_theta!r}")
    for name in (
        "factor",
        "beta_fast",
        "beta_slow",
        "mscale",
        "mscale_all_dim",
        "attention_factor",
        "low_freq_factor",
        "high_freq_factor",
        "partial_rotary_factor",
    ):
        value = getattr(c, name)
        if value is not None and not _is_number(value):
            raise ValueError(f"{name} must be a finite number, got {value!r}")
    for name in ("original_max_position_embeddings", "max_position_embeddings"):
        value = getattr(c, name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if c.truncate is not None and not isinstance(c.truncate, bool):
        raise ValueError(f"truncate must be True or False, got {c.truncate!r}")
    if c.factor is not None and c.factor < 1:
        raise ValueError(f"factor must be >= 1 (the context is extended, not shrunk), got {c.factor!r}")
    if c.attention_factor is not None and c.attention_factor <= 0:
        raise ValueError(f"attention_factor must be > 0, got {c.attention_factor!r}")
    if c.partial_rotary_factor is not None and not (0 < c.partial_rotary_factor <= 1):
        raise ValueError(f"partial_rotary_factor must be in (0, 1], got {c.partial_rotary_factor!r}")
    for name in ("short_factor", "long_factor"):
        value = getattr(c, name)
        if value is not None and not all(_is_number(v) and v > 0 for v in value):
            raise ValueError(f"{name} must hold positive numbers, got {list(value)!r}")

    t = c.rope_type
    if t in ("linear", "ntk", "dynamic", "yarn", "llama3"):
        _require(c, "factor", why="the scale factor s = extended length / original length")
    if t == "dynamic" and c.original_length() is None:
        raise ValueError(
            "rope_type 'dynamic' requires the length the model was trained at, as 'max_position_embeddings' "
            "(HF's key for it) or 'original_max_position_embeddings'; neither is given"
        )
    if t in ("yarn", "llama3", "longrope"):
        _require(
            c,
            "original_max_position_embeddings",
            why="the pre-training context length; HF would silently use max_position_embeddings, which is "
            "the extended length for a scaled model",
        )
    if t == "yarn":
        # 0 means "not given" (HF: ``beta_fast or 32``, ``beta_slow or 1``); the resolved values are
        # rotation counts within L and enter log(L / (2 pi beta)), so they must be > 0.
        for name, default in (("beta_fast", 32), ("beta_slow", 1)):
            value = getattr(c, name)
            if value is not None and value < 0:
                raise ValueError(
                    f"{name} must be > 0 (a number of rotations within original_max_position_embeddings; "
                    f"0 or absent means the default {default}), got {value!r}"
                )
        if (c.beta_fast or 32) < (c.beta_slow or 1):
            raise ValueError(
                f"beta_fast ({c.beta_fast if c.beta_fast else 32}) must be >= beta_slow "
                f"({c.beta_slow if c.beta_slow else 1}) (absent or 0: the defaults beta_fast=32, beta_slow=1)"
            )
    if t == "llama3":
        _require(c, "low_freq_factor", "high_freq_factor", why="Llama 3 band edges L/low and L/high")
        if c.low_freq_factor <= 0:
            raise ValueError(
                f"low_freq_factor must be > 0 (the low-frequency band edge is "
                f"original_max_position_embeddings / low_freq_factor), got {c.low_freq_factor!r}"
            )
        if c.high_freq_factor <= c.low_freq_factor:
            raise ValueError(
                f"high_freq_factor ({c.high_freq_factor}) must be greater than low_freq_factor ({c.low_freq_factor})"
            )
    if t == "longrope":
        _require(c, "short_factor", "long_factor", why="LongRoPE's per-pair rescale factors")
        if c.factor is None and c.attention_factor is None and c.max_position_embeddings is None:
            raise ValueError(
                "rope_type 'longrope' needs 'factor', or 'max_position_embeddings' to infer it "
                "(factor = max_position_embeddings / original_max_position_embeddings), or 'attention_factor'"
            )


# ---------------------------------------------------------------------------------------------------
# Reading a whole HF model config (transformers ``PretrainedConfig`` or its ``to_dict()``)
# ---------------------------------------------------------------------------------------------------
#: keys that mark a mapping as a whole model config rather than a bare rope mapping (none of them is a
#: ``RopeConfig`` field, so a bare mapping holding one was rejected as "unknown key" before)
_MODEL_CONFIG_KEYS = (
    "rope_parameters",
    "rope_scaling",
    "hidden_size",
    "num_attention_heads",
    "head_dim",
    "model_type",
    "rotary_pct",
    "rotary_emb_base",
    "text_config",
)


def _model_get(config: Any, key: str) -> Any:
    """``config[key]`` for a mapping, ``config.key`` for an object; ``None`` when absent."""
    if isinstance(config, Mapping):
        return config.get(key)
    return getattr(config, key, None)


def _is_model_config(config: Any) -> bool:
    if isinstance(config, RopeConfig):
        return False
    if isinstance(config, Mapping):
        return any(k in config for k in _MODEL_CONFIG_KEYS)
    return any(_model_get(config, k) is not None for k in _MODEL_CONFIG_KEYS)


def _rope_from_model_config(config: Any, head_dim: int | None, layer_type: str | None) -> tuple[RopeConfig, int]:
    """``(RopeConfig, head_dim)`` from an HF model config, with transformers 5.24's priorities.

    * rope mapping: ``rope_parameters`` (transformers >= 5) or ``rope_scaling`` (older; legacy ``type``
      read as ``rope_type``); per-layer-type mappings (Gemma 3: ``{"full_attention": {...}, ...}``) need
      ``layer_type``. Its keys are validated by ``RopeConfig.from_mapping`` (unknown ones raise).
    * ``rope_theta``: the rope mapping's, else the top-level ``rope_theta``, else GPT-NeoX's
      ``rotary_emb_base``, else 10000 (HF ``default_theta``).
    * ``partial_rotary_factor``: the rope mapping's, else the top-level one, else GPT-NeoX's ``rotary_pct``.
    * ``max_position_embeddings``: the top-level one (HF reads it there: ``dynamic``'s training length,
      ``longrope``'s implicit factor).
    * ``original_max_position_embeddings`` for ``yarn``/``llama3``/``longrope``: a top-level one (Phi-3
      keeps it there) replaces the rope mapping's, as in HF's ``standardize_rope_params``; otherwise the
      rope mapping's. HF's fallback to ``max_position_embeddings`` is not taken (see ``RopeConfig``);
      a config *object* built by transformers already holds the value HF chose.
    * ``head_dim``: the argument, else the config's ``head_dim``, else ``hidden_size // num_attention_heads``.
    Every other model key is ignored.
    """
    if not isinstance(config, Mapping) and callable(getattr(config, "get_text_config", None)):
        config = config.get_text_config(decoder=True)  # the config itself for a plain language model
    elif (
        isinstance(config, Mapping)
        and isinstance(config.get("text_config"), Mapping)
        and not any(config.get(k) is not None for k in ("rope_parameters", "rope_scaling", "rope_theta"))
    ):
        config = config["text_config"]  # composite (e.g. vision-language) config dict

    rope_key = "rope_parameters" if _model_get(config, "rope_parameters") is not None else "rope_scaling"
    rope = _model_get(config, rope_key)
    if rope is None:
        if _model_get(config, "rope_theta") is None and _model_get(config, "rotary_emb_base") is None:
            raise ValueError(
                "the model config holds no RoPE settings: none of 'rope_parameters' (transformers >= 5), "
                "'rope_scaling', 'rope_theta' or 'rotary_emb_base' (GPT-NeoX) is set"
            )
        rope = {}
    if isinstance(rope, RopeConfig):
        rope = rope.as_dict()
    if not isinstance(rope, Mapping):
        raise ValueError(f"the model config's {rope_key!r} must be a mapping, got {type(rope).__name__}")
    nested = [k for k, v in rope.items() if isinstance(v, Mapping)]
    if layer_type is not None:
        if layer_type not in nested:
            raise ValueError(
                f"layer_type {layer_type!r} not in the config's per-layer-type {rope_key!r}; "
                f"known: {', '.join(map(repr, nested)) or 'none (it is one flat mapping)'}"
            )
        rope = rope[layer_type]
    elif nested:
        raise ValueError(
            f"the config's {rope_key!r} has one mapping per layer type ({', '.join(map(repr, nested))}); "
            "choose one with layer_type=..."
        )
    rope = dict(rope)

    theta = _model_get(config, "rope_theta")
    if theta is None:
        theta = _model_get(config, "rotary_emb_base")
    if rope.get("rope_theta") is None and theta is not None:
        rope["rope_theta"] = theta
    partial = _model_get(config, "partial_rotary_factor")
    if partial is None:
        partial = _model_get(config, "rotary_pct")
    if rope.get("partial_rotary_factor") is None and partial is not None:
        rope["partial_rotary_factor"] = partial
    max_pos = _model_get(config, "max_position_embeddings")
    if max_pos is not None:
        rope["max_position_embeddings"] = max_pos
    if _model_get(config, "model_type") == "phi3":  # HF's Phi3Config reads the legacy 'su' and 'yarn' as
        for key in ("type", "rope_type"):  # 'longrope' (and keeps the old 'type' next to it)
            if rope.get(key) in ("su", "yarn"):
                rope[key] = "longrope"
    rope_type = rope.get("rope_type") or rope.get("type")
    original = _model_get(config, "original_max_position_embeddings")
    if original is not None and rope_type in ("yarn", "llama3", "longrope"):
        rope["original_max_position_embeddings"] = original

    try:
        rope_config = RopeConfig.from_mapping(rope)
    except ValueError as err:
        raise ValueError(f"in the model config's {rope_key!r}: {err}") from err

    if head_dim is None:
        head_dim = _model_get(config, "head_dim")
    if head_dim is None:
        hidden, heads = _model_get(config, "hidden_size"), _model_get(config, "num_attention_heads")
        if hidden is None or heads is None:
            missing = [k for k, v in (("hidden_size", hidden), ("num_attention_heads", heads)) if v is None]
            raise ValueError(
                "cannot tell the head size: the model config has no 'head_dim' and no 'hidden_size' and "
                f"'num_attention_heads' (missing: {', '.join(map(repr, missing))}); pass head_dim=..."
            )
        if not isinstance(hidden, int) or not isinstance(heads, int) or heads < 1:
            raise ValueError(
                f"hidden_size and num_attention_heads must be positive integers, got {hidden!r} and {heads!r}"
            )
        head_dim = hidden // heads
    return rope_config, head_dim


# ---------------------------------------------------------------------------------------------------
# Frequencies: one function per rope_type, each mirroring HF's float32 arithmetic
# ---------------------------------------------------------------------------------------------------
def _base_inv_freq(base: float, dim: int) -> torch.Tensor:
    """RoFormer ``theta_i = base^(-2i/dim)``, (dim/2,) float32, computed exactly as HF and Meta do."""
    return 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))


def _freq_default(c: RopeConfig, head_dim: int, seq_len: int | None) -> tuple[torch.Tensor, float]:
    return _base_inv_freq(c.rope_theta, c.rotary_dim(head_dim)), 1.0


def _freq_linear(c: RopeConfig, head_dim: int, seq_len: int | None) -> tuple[torch.Tensor, float]:
    inv_freq = _base_inv_freq(c.rope_theta, c.rotary_dim(head_dim))
    inv_freq /= c.factor
    return inv_freq, 1.0


def _freq_ntk(c: RopeConfig, head_dim: int, seq_len: int | None) -> tuple[torch.Tensor, float]:
    dim = c.rotary_dim(head_dim)
    if dim == 2:
        raise ValueError("rope_type 'ntk' needs a rotary dimension > 2 (the exponent is d/(d-2))")
    base = c.rope_theta * c.factor ** (dim / (dim - 2))
    return _base_inv_freq(base, dim), 1.0


def _freq_dynamic(c: RopeConfig, head_dim: int, seq_len: int | None) -> tuple[torch.Tensor, float]:
    dim = c.rotary_dim(head_dim)
    if dim == 2:
        raise ValueError("rope_type 'dynamic' needs a rotary dimension > 2 (the exponent is d/(d-2))")
    length = c.original_length()
    seq = length if seq_len is None else max(int(seq_len), length)
    base = c.rope_theta * ((c.factor * seq / length) - (c.factor - 1)) ** (dim / (dim - 2))
    return _base_inv_freq(base, dim), 1.0


def _yarn_get_mscale(scale: float, mscale: float = 1.0) -> float:
    if scale <= 1:
        return 1.0
    return 0.1 * mscale * math.log(scale) + 1.0


def _freq_yarn(c: RopeConfig, head_dim: int, seq_len: int | None) -> tuple[torch.Tensor, float]:
    base, dim, factor = c.rope_theta, c.rotary_dim(head_dim), c.factor
    length = c.original_max_position_embeddings
    attention_factor = c.attention_factor
    if attention_factor is None:
        if c.mscale and c.mscale_all_dim:  # DeepSeek-V2/V3
            attention_factor = float(_yarn_get_mscale(factor, c.mscale) / _yarn_get_mscale(factor, c.mscale_all_dim))
        else:
            attention_factor = _yarn_get_mscale(factor)
    beta_fast = c.beta_fast or 32  # HF treats 0 as "not given"
    beta_slow = c.beta_slow or 1

    def correction_dim(num_rotations: float) -> float:  # pair index whose wavelength fits num_rotations in L
        return (dim * math.log(length / (num_rotations * 2 * math.pi))) / (2 * math.log(base))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if True if c.truncate is None else c.truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001  # HF: prevent a singular ramp
    ramp = torch.clamp((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low), 0, 1)

    pos_freqs = base ** (torch.arange(0, dim, 2).float() / dim)
    inv_freq_extrapolation = 1.0 / pos_freqs
    inv_freq_interpolation = 1.0 / (factor * pos_freqs)
    extrapolation_factor = 1 - ramp  # 1 for high-frequency pairs (kept), 0 for low (interpolated)
    inv_freq = inv_freq_interpolation * (1 - extrapolation_factor) + inv_freq_extrapolation * extrapolation_factor
    return inv_freq, attention_factor


def _freq_llama3(c: RopeConfig, head_dim: int, seq_len: int | None) -> tuple[torch.Tensor, float]:
    inv_freq = _base_inv_freq(c.rope_theta, c.rotary_dim(head_dim))
    factor, low, high = c.factor, c.low_freq_factor, c.high_freq_factor
    length = c.original_max_position_embeddings
    low_freq_wavelen, high_freq_wavelen = length / low, length / high
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth = (length / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    is_medium = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
    return torch.where(is_medium, smoothed, scaled), 1.0


def _longrope_factor(c: RopeConfig) -> float:
    if c.factor is not None:
        return c.factor
    return c.max_position_embeddings / c.original_max_position_embeddings


def _freq_longrope(c: RopeConfig, head_dim: int, seq_len: int | None) -> tuple[torch.Tensor, float]:
    base, dim = c.rope_theta, c.rotary_dim(head_dim)
    length = c.original_max_position_embeddings
    for name in ("short_factor", "long_factor"):
        if len(getattr(c, name)) != dim // 2:
            raise ValueError(f"{name} has {len(getattr(c, name))} entries; rotary_dim // 2 = {dim // 2} are required")
    attention_factor = c.attention_factor
    if attention_factor is None:
        factor = _longrope_factor(c)
        attention_factor = 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(length))
    use_long = bool(seq_len) and seq_len > length
    ext = torch.tensor(c.long_factor if use_long else c.short_factor, dtype=torch.float32)
    shape = torch.arange(0, dim, 2, dtype=torch.int64).float() / dim
    return 1.0 / (ext * base**shape), attention_factor


def _freq_proportional(c: RopeConfig, head_dim: int, seq_len: int | None) -> tuple[torch.Tensor, float]:
    _check_head_dim(head_dim)
    p = c.partial_rotary_factor if c.partial_rotary_factor is not None else 1.0
    angles = int(p * head_dim // 2)  # pairs that keep a frequency: the highest ones
    inv_freq = 1.0 / (c.rope_theta ** (torch.arange(0, 2 * angles, 2, dtype=torch.int64).float() / head_dim))
    if head_dim // 2 > angles:
        inv_freq = torch.cat((inv_freq, torch.zeros(head_dim // 2 - angles, dtype=torch.float32)))
    inv_freq /= c.factor if c.factor is not None else 1.0
    return inv_freq, 1.0


#: rope_type -> function(config, head_dim, seq_len) -> (inv_freq (rotary_dim//2,) float32, attention_factor)
ROPE_TYPES: dict[str, Callable[[RopeConfig, int, int | None], tuple[torch.Tensor, float]]] = {
    "default": _freq_default,
    "linear": _freq_linear,
    "ntk": _freq_ntk,
    "dynamic": _freq_dynamic,
    "yarn": _freq_yarn,
    "llama3": _freq_llama3,
    "longrope": _freq_longrope,
    "proportional": _freq_proportional,
}


def rope_frequencies(
    config: Mapping[str, Any] | RopeConfig, head_dim: int, seq_len: int | None = None
) -> tuple[torch.Tensor, float]:
    """Inverse frequencies and attention factor for an HF-style RoPE config.

    Args:
        config: mapping with HF transformers' keys (``rope_theta``, ``rope_type`` or legacy ``type``,
            ``factor``, ``original_max_position_embeddings``, ``max_position_embeddings``, ``beta_fast``,
            ``beta_slow``, ``mscale``, ``mscale_all_dim``, ``truncate``, ``attention_factor``,
            ``low_freq_factor``, ``high_freq_factor``, ``short_factor``, ``long_factor``,
            ``partial_rotary_factor``), or a ``RopeConfig``.
        head_dim: the attention head size (even).
        seq_len: current sequence length; used by ``dynamic`` (``max(seq_len, L)``) and ``longrope``
            (long factors iff ``seq_len > original_max_position_embeddings``); ``None`` means "within the
            original length".

    Returns:
        ``(inv_freq, attention_factor)``: ``inv_freq`` a float32 tensor of ``rotary_dim // 2`` values
        (equal to HF's ``ROPE_INIT_FUNCTIONS`` output), ``attention_factor`` a float that multiplies both
        cos and sin (1.0 except for ``yarn`` and ``longrope``).

    Raises:
        ValueError: unknown ``rope_type`` (lists the known ones), odd ``head_dim``, missing or invalid keys.
    """
    c = RopeConfig.from_mapping(config)
    _check_head_dim(head_dim)
    if seq_len is not None and (not isinstance(seq_len, int) or isinstance(seq_len, bool) or seq_len < 1):
        raise ValueError(f"seq_len must be a positive integer or None, got {seq_len!r}")
    inv_freq, attention_factor = ROPE_TYPES[c.rope_type](c, head_dim, seq_len)
    return inv_freq.to(torch.float32), float(attention_factor)


# ---------------------------------------------------------------------------------------------------
# Applying the rotation
# ---------------------------------------------------------------------------------------------------
# Two kernels, each ``kernel(x, *tables) -> new tensor`` rotating the first d_rot coordinates of x
# (..., D) and copying the rest. Chosen by measurement on a 2-core CPU (benchmarks/rope_apply.py):
# the rotation is memory-bound, so what counts is the number of passes over x and of allocations.
def _new_with_tail(x: torch.Tensor, rd: int) -> torch.Tensor:
    out = torch.empty_like(x)
    if rd < x.shape[-1]:
        out[..., rd:].copy_(x[..., rd:])  # partial rotary: the tail passes through
    return out


def _half_split_kernel(
    x: torch.Tensor, cos_full: torch.Tensor, sin_a: torch.Tensor, sin_b: torch.Tensor
) -> torch.Tensor:
    """Half layout: ``out = x*cat(cos,cos)``, then ``out1 += x2*sin_a`` and ``out2 += x1*sin_b``.

    (sin_a, sin_b) = (-sin, sin) rotates forward, (sin, -sin) backward. One allocation and three passes
    (HF: five allocating passes, including the ``rotate_half`` copy). Measured against a two-pass
    broadcast form (``x[..., :1, :] * stack(cos, sin) + x[..., 1:, :] * stack(-sin, cos)`` on a
    (..., 2, h) view), which was no faster: its short broadcast inner loops cost more than the pass saved.
    """
    rd = cos_full.shape[-1]
    h = rd // 2
    out = _new_with_tail(x, rd)
    torch.mul(x[..., :rd], cos_full, out=out[..., :rd])
    out[..., :h].addcmul_(x[..., h:rd], sin_a)
    out[..., h:rd].addcmul_(x[..., :h], sin_b)
    return out


def _interleaved_kernel(x: torch.Tensor, cis: torch.Tensor) -> torch.Tensor:
    """Interleaved layout: Meta's complex multiply by ``cis = cos + i sin`` (..., d_rot/2); one pass.

    Reduced-precision inputs are rotated in float32 and cast back (there is no complex bf16).
    """
    rd = 2 * cis.shape[-1]
    xr = x[..., :rd]
    work = xr if xr.dtype in (torch.float32, torch.float64) else xr.float()
    try:
        z = torch.view_as_complex(work.unflatten(-1, (-1, 2)))  # (..., d_rot/2) view
    except RuntimeError:  # strides not complex-compatible (e.g. odd head_dim): make the slice contiguous
        z = torch.view_as_complex(work.contiguous().unflatten(-1, (-1, 2)))
    rotated = torch.view_as_real(z * cis).flatten(-2)
    if rd == x.shape[-1]:
        return rotated.to(x.dtype)
    out = _new_with_tail(x, rd)
    out[..., :rd].copy_(rotated)
    return out


class _Rotate(torch.autograd.Function):
    """Autograd for a rotation kernel: the gradient of a rotation is the rotation by the opposite angle,
    i.e. the same kernel with the backward tables (constants, never differentiated)."""

    @staticmethod
    def forward(ctx, x, kernel, forward_tables, backward_tables):  # type: ignore[override]
        ctx.kernel, ctx.backward_tables, ctx.forward_tables = kernel, backward_tables, forward_tables
        return kernel(x, *forward_tables)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        return _Rotate.apply(grad, ctx.kernel, ctx.backward_tables, ctx.forward_tables), None, None, None


def _plan(layout: str) -> tuple[Callable[..., torch.Tensor], tuple[str, ...], tuple[str, ...]]:
    """(kernel, forward table names, backward table names) for a layout."""
    if layout == "interleaved":
        return _interleaved_kernel, ("cis",), ("cis_conj",)
    return _half_split_kernel, ("cos_full", "neg_sin", "sin"), ("cos_full", "sin", "neg_sin")


def _derive(name: str, cos: torch.Tensor, sin: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Kernel tables from per-pair cos/sin (..., h); complex ones from float64 cos/sin for accuracy."""
    if name == "cos_full":
        return torch.cat((cos, cos), dim=-1).to(dtype)
    if name == "sin":
        return sin.to(dtype)
    if name == "neg_sin":
        return (-sin).to(dtype)
    cdt = torch.complex128 if dtype == torch.float64 else torch.complex64
    if name == "cis":
        return torch.complex(cos.double(), sin.double()).to(cdt)
    if name == "cis_conj":
        return torch.complex(cos.double(), -sin.double()).to(cdt)
    raise KeyError(name)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, layout: str = "half") -> torch.Tensor:
    """Rotate the first ``2 * cos.shape[-1]`` coordinates of ``x`` pair by pair; the rest pass through.

    Args:
        x: ``(..., D)`` queries or keys.
        cos, sin: per-pair ``(..., d_rot/2)``, broadcastable against ``x[..., :d_rot/2]`` (any attention
            factor or xPos scale already multiplied in), float32/float64 or ``x``'s dtype.
        layout: ``"half"`` (pair i = (i, i + d_rot/2)) or ``"interleaved"`` (pair i = (2i, 2i+1)).

    Supports autograd (with respect to ``x``). ``RoPE`` calls the same kernels with cached tables.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; known: {', '.join(LAYOUTS)}")
    kernel, fwd, bwd = _plan(layout)
    with torch.no_grad():
        tables = {n: _derive(n, cos, sin, x.dtype).to(x.device) for n in set(fwd) | set(bwd)}
    return _Rotate.apply(x, kernel, tuple(tables[n] for n in fwd), tuple(tables[n] for n in bwd))


def _check_positions(positions: Any) -> torch.Tensor:
    if not isinstance(positions, torch.Tensor):
        raise ValueError(f"positions must be an integer torch tensor, got {type(positions).__name__}")
    if positions.dtype.is_floating_point or positions.dtype.is_complex or positions.dtype == torch.bool:
        raise ValueError(
            f"positions must be an integer tensor (torch.long), got dtype {positions.dtype}: positions never "
            "pass through a float (bf16 holds integers exactly only up to 256)"
        )
    if positions.dim() not in (1, 2) or positions.numel() == 0:
        raise ValueError(f"positions must have shape (T,) or (B, T) with T >= 1, got {tuple(positions.shape)}")
    return positions


class RoPE(nn.Module):
    """Rotary position embedding for one head size, one scaling config and one pair layout.

    ``rope(x, positions, seq_len=None)`` rotates ``x`` (B, H, T, head_dim) at integer ``positions``
    (T,) or (B, T). ``seq_len`` (default ``int(positions.max()) + 1``, as HF) selects the ``dynamic``
    and ``longrope`` frequencies. The first ``rotary_dim`` coordinates are rotated; the tail is copied.

    cos/sin tables are built in float64 from the integer positions, multiplied by the attention factor,
    cast to the compute dtype and cached (LRU, ``cache_size`` entries) by (frequency set, first position,
    last position, dtype, device). The frequency set is the config's own except for ``dynamic``
    (keyed by ``max(seq_len, L)``) and ``longrope`` (keyed by ``seq_len > L``), so a short input after a
    long one gets the original frequencies back.
    """

    cache_size = 16

    def __init__(self, config: RopeConfig | Mapping[str, Any], head_dim: int, layout: str = "half") -> None:
        super().__init__()
        if layout not in LAYOUTS:
            raise ValueError(f"unknown layout {layout!r}; known: {', '.join(LAYOUTS)}")
        self.config = RopeConfig.from_mapping(config)
        _check_head_dim(head_dim)
        self.head_dim = head_dim
        self.layout = layout
        self.rotary_dim = self.config.rotary_dim(head_dim)
        self._freqs: OrderedDict[Any, tuple[torch.Tensor, float]] = OrderedDict()
        self._tables: OrderedDict[Any, dict[str, torch.Tensor]] = OrderedDict()
        self._memo: tuple[Any, torch.Tensor, list[torch.Tensor]] | None = None
        self.frequencies()  # validate now (e.g. LongRoPE factor lengths), not at the first forward

    @classmethod
    def from_hf_config(
        cls,
        config: Any,
        head_dim: int | None = None,
        layout: str = "half",
        *,
        layer_type: str | None = None,
    ) -> "RoPE":
        """Build from an HF transformers config, as a user holds it.

        ``config`` may be

        * a transformers ``PretrainedConfig`` (``model.config``, e.g. ``LlamaConfig``, ``GPTNeoXConfig``,
          ``Phi3Config``; a composite config's text config is used),
        * its ``to_dict()`` or a ``config.json`` loaded as a dict (transformers >= 5 writes
          ``rope_parameters``; older versions ``rope_scaling`` next to ``rope_theta``),
        * a bare rope mapping with HF keys (``config.rope_parameters``, ``{"rope_theta": 1e4}``) or a
          ``RopeConfig``; then ``head_dim`` must be given.

        From a model config it reads the rope mapping (``rope_parameters`` or ``rope_scaling``),
        ``rope_theta`` (GPT-NeoX: ``rotary_emb_base``), ``partial_rotary_factor`` (GPT-NeoX: ``rotary_pct``;
        ``rotary_dim = int(head_dim * factor)``), ``max_position_embeddings``, a top-level
        ``original_max_position_embeddings`` (Phi-3), and ``head_dim`` (else ``hidden_size //
        num_attention_heads``), with the priorities of transformers 5.24 (``_rope_from_model_config``);
        other model keys are ignored. Unknown keys *inside* the rope mapping raise ``ValueError`` as in
        ``RopeConfig.from_mapping``. A mapping counts as a model config when it holds one of
        ``rope_parameters``, ``rope_scaling``, ``hidden_size``, ``num_attention_heads``, ``head_dim``,
        ``model_type``, ``rotary_pct``, ``rotary_emb_base`` or ``text_config``.

        Args:
            config: see above.
            head_dim: the attention head size; overrides the config's. Required for a bare rope mapping.
            layout: ``"half"`` (HF, GPT-NeoX) or ``"interleaved"`` (Meta); see the module docstring.
            layer_type: for configs with one rope mapping per layer type (Gemma 3's
                ``{"full_attention": {...}, "sliding_attention": {...}}``), which one to use.

        Raises:
            ValueError: a needed key is missing (named), a value is invalid, or ``config`` is none of the above.
        """
        if _is_model_config(config):
            rope_config, model_head_dim = _rope_from_model_config(config, head_dim, layer_type)
            return cls(rope_config, model_head_dim, layout)
        if not isinstance(config, (Mapping, RopeConfig)):
            raise ValueError(
                "config must be a transformers config, its to_dict(), or a mapping with HF rope keys; got "
                f"{type(config).__name__} with none of {', '.join(_MODEL_CONFIG_KEYS)}"
            )
        if layer_type is not None:
            raise ValueError("layer_type applies only to a model config with per-layer-type rope parameters")
        if head_dim is None:
            raise ValueError(
                "head_dim is required with a bare rope mapping (it has no 'head_dim', 'hidden_size' or "
                "'num_attention_heads'); pass head_dim=... or the whole model config"
            )
        return cls(RopeConfig.from_mapping(config), head_dim, layout)

    def with_config(self, **changes: Any) -> "RoPE":
        """A new ``RoPE`` with some config keys changed (e.g. ``rope_type="yarn", factor=4``)."""
        return RoPE(self.config.replace(**changes), self.head_dim, self.layout)

    def extra_repr(self) -> str:
        return f"head_dim={self.head_dim}, rotary_dim={self.rotary_dim}, layout={self.layout!r}, config={self.config.as_dict()}"

    # -- frequencies -------------------------------------------------------------------------------
    def _freq_key(self, seq_len: int | None) -> Any:
        length = self.config.original_length()
        if self.config.rope_type == "dynamic":
            return length if seq_len is None else max(int(seq_len), length)
        if self.config.rope_type == "longrope":
            return bool(seq_len) and seq_len > length
        return None

    def frequencies(self, seq_len: int | None = None) -> tuple[torch.Tensor, float]:
        """``(inv_freq, attention_factor)`` used for inputs of length ``seq_len`` (cached)."""
        key = self._freq_key(seq_len)
        hit = self._freqs.get(key)
        if hit is None:
            if self.config.rope_type == "dynamic":
                representative = key  # the effective length max(seq_len, L)
            elif self.config.rope_type == "longrope":
                representative = self.config.original_length() + 1 if key else None
            else:
                representative = None
            hit = rope_frequencies(self.config, self.head_dim, representative)
            self._freqs[key] = hit
            while len(self._freqs) > self.cache_size:
                self._freqs.popitem(last=False)
        else:
            self._freqs.move_to_end(key)
        return hit

    @property
    def attention_factor(self) -> float:
        """The factor that multiplies cos and sin (logits scale by its square)."""
        return self.frequencies()[1]

    # -- cos/sin -----------------------------------------------------------------------------------
    def _table(
        self, seq_len: int, lo: int, hi: int, dtype: torch.dtype, device: torch.device
    ) -> dict[str, torch.Tensor]:
        """Tables for positions lo..hi (inclusive) at ``seq_len``'s frequencies, rows (hi-lo+1, ...)."""
        key = (self._freq_key(seq_len), lo, hi, dtype, device)
        hit = self._tables.get(key)
        if hit is not None:
            self._tables.move_to_end(key)
            return hit
        inv_freq, attention_factor = self.frequencies(seq_len)
        with torch.inference_mode(False), torch.no_grad():  # cached tensors must be usable in training too
            # integer arange, then float64 (exact up to 2^53): a float64 arange near 2^53 has the wrong length
            pos = torch.arange(lo, hi + 1, dtype=torch.int64).to(torch.float64)
            angle = pos[:, None] * inv_freq.to(torch.float64)[None, :]  # (n, d_rot/2), float64
            entry = {"cos64": torch.cos(angle) * attention_factor, "sin64": torch.sin(angle) * attention_factor}
        self._tables[key] = entry
        while len(self._tables) > self.cache_size:
            self._tables.popitem(last=False)
        return entry

    def _direct(
        self,
        positions: torch.Tensor,
        seq_len: int,
        dtype: torch.dtype,
        device: torch.device,
        names: tuple[str, ...],
    ) -> list[torch.Tensor]:
        """The named tables at ``positions`` computed for those positions alone, rows (T, ...) or (B, T, ...)."""
        inv_freq, attention_factor = self.frequencies(seq_len)
        with torch.inference_mode(False), torch.no_grad():
            pos = positions.to(device="cpu", dtype=torch.float64)  # exact integers (checked <= 2^53)
            angle = pos[..., None] * inv_freq.to(torch.float64)  # (..., d_rot/2), float64
            entry = {"cos64": torch.cos(angle) * attention_factor, "sin64": torch.sin(angle) * attention_factor}
            return [self._get(entry, name, dtype, device) for name in names]

    @staticmethod
    def _get(entry: dict[str, torch.Tensor], name: str, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        key = f"{name}:{dtype}"  # one entry serves one device; dtypes share the float64 angles
        if key not in entry:
            with torch.inference_mode(False), torch.no_grad():
                if name in ("cos", "sin"):
                    table = entry[f"{name}64"].to(dtype)
                else:
                    table = _derive(name, entry["cos64"], entry["sin64"], dtype)
                entry[key] = table.to(device)
        return entry[key]

    def _lookup(
        self,
        positions: torch.Tensor,
        seq_len: int | None,
        dtype: torch.dtype,
        device: torch.device,
        names: tuple[str, ...],
    ) -> list[torch.Tensor]:
        """The named tables at ``positions``: rows (T, ...) or (B, T, ...). Memoised for the last call's
        positions tensor (same object, unmodified), as a model rotates q and k in every layer with it."""
        try:
            memo_key = (id(positions), positions._version, seq_len, dtype, device, names)
        except RuntimeError:  # inference tensors have no version counter: no memo
            memo_key = None
        if memo_key is not None and self._memo is not None and self._memo[0] == memo_key:
            return self._memo[2]
        positions = _check_positions(positions)
        lo_t, hi_t = torch.aminmax(positions)
        lo, hi = int(lo_t), int(hi_t)
        if lo < 0:
            raise ValueError(f"positions must be >= 0, got a minimum of {lo}")
        if hi > MAX_EXACT_POSITION:
            raise ValueError(
                f"positions must be <= 2**53 = {MAX_EXACT_POSITION} (the largest range of integers float64 "
                f"holds exactly; the angles are formed in float64), got a maximum of {hi}"
            )
        if seq_len is None:
            seq_len = hi + 1
        elif not isinstance(seq_len, int) or isinstance(seq_len, bool) or seq_len < 1:
            raise ValueError(f"seq_len must be a positive integer, got {seq_len!r}")
        span = hi - lo + 1
        if span > _DIRECT_MIN_SPAN and span > _DIRECT_SPAN_RATIO * positions.numel():
            # sparse positions over a huge span (e.g. [0, 2**24]): angles for the given positions only,
            # not a table of the whole span (same float64 formula; not cached)
            out = self._direct(positions, seq_len, dtype, device, names)
            if memo_key is not None:
                self._memo = (memo_key, positions, out)
            return out
        entry = self._table(seq_len, lo, hi, dtype, device)
        # contiguous positions offset..offset+T-1 use the table as is; others gather its rows
        contiguous = (
            positions.dim() == 1
            and positions.numel() == hi - lo + 1
            and (positions.numel() == 1 or bool((positions[1:] - positions[:-1] == 1).all()))
        )
        index = None if contiguous else (positions - lo).to(device)
        out = []
        for name in names:
            table = self._get(entry, name, dtype, device)
            out.append(table if index is None else table[index])
        if memo_key is not None:
            self._memo = (memo_key, positions, out)  # holding `positions` keeps its id from being reused
        return out

    def cos_sin(
        self,
        positions: torch.Tensor,
        seq_len: int | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-pair cos and sin at integer ``positions``, attention factor included.

        Returns two tensors of shape ``positions.shape + (rotary_dim // 2,)`` in ``dtype`` on ``device``
        (default: the positions' device). HF's ``(cos, sin)`` for the half layout are
        ``torch.cat((cos, cos), -1)`` and ``torch.cat((sin, sin), -1)``; Meta's ``freqs_cis`` is
        ``torch.complex(cos, sin)``. Angles are float64 ``position * inv_freq`` before the cast.
        """
        device = torch.device(positions.device if device is None else device)
        cos, sin = self._lookup(positions, seq_len, dtype, device, ("cos", "sin"))
        return cos, sin

    # -- forward -----------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, positions: torch.Tensor, seq_len: int | None = None) -> torch.Tensor:
        """Rotate ``x`` (B, H, T, head_dim) at integer ``positions`` (T,) or (B, T); returns a new tensor."""
        if x.dim() != 4 or x.shape[-1] != self.head_dim:
            raise ValueError(f"x must have shape (B, H, T, {self.head_dim}), got {tuple(x.shape)}")
        if not x.dtype.is_floating_point:
            raise ValueError(f"x must be a floating-point tensor, got dtype {x.dtype}")
        positions = _check_positions(positions)
        if positions.shape[-1] != x.shape[2] or (positions.dim() == 2 and positions.shape[0] not in (1, x.shape[0])):
            raise ValueError(
                f"positions shape {tuple(positions.shape)} does not match x (B, H, T, D) = {tuple(x.shape)}"
            )
        kernel, fwd, bwd = _plan(self.layout)
        names = fwd + tuple(n for n in bwd if n not in fwd)
        tables = dict(zip(names, self._lookup(positions, seq_len, x.dtype, x.device, names)))
        if positions.dim() == 2:  # rows (B, T, ...) -> (B, 1, T, ...): broadcast over heads
            tables = {n: t.unsqueeze(1) for n, t in tables.items()}
        return _Rotate.apply(x, kernel, tuple(tables[n] for n in fwd), tuple(tables[n] for n in bwd))


# ---------------------------------------------------------------------------------------------------
# Weight layout conversion (Meta -> HF: docs/references.md §1.2)
# ---------------------------------------------------------------------------------------------------
def _layout_perm(head_dim: int, rotary_dim: int | None, to_half: bool) -> torch.Tensor:
    rd = head_dim if rotary_dim is None else rotary_dim
    if head_dim % 2 or rd % 2 or not (2 <= rd <= head_dim):
        raise ValueError(f"need even head_dim and even 2 <= rotary_dim <= head_dim, got {head_dim}, {rd}")
    evens_then_odds = torch.cat((torch.arange(0, rd, 2), torch.arange(1, rd, 2)))  # half[j] = inter[perm[j]]
    perm = evens_then_odds if to_half else torch.argsort(evens_then_odds)
    return torch.cat((perm, torch.arange(rd, head_dim)))


def _permute_rows(weight: torch.Tensor, n_heads: int, head_dim: int, perm: torch.Tensor) -> torch.Tensor:
    if (
        not isinstance(n_heads, int)
        or n_heads < 1
        or weight.dim() not in (1, 2)
        or weight.shape[0] != n_heads * head_dim
    ):
        raise ValueError(
            f"weight must have n_heads * head_dim = {n_heads} * {head_dim} rows (a q/k projection weight "
            f"(out, in) or bias (out,)), got shape {tuple(weight.shape)}"
        )
    w = weight.reshape(n_heads, head_dim, *weight.shape[1:])
    return w[:, perm.to(weight.device)].reshape(weight.shape)


def interleaved_to_half(
    weight: torch.Tensor, n_heads: int, head_dim: int, rotary_dim: int | None = None
) -> torch.Tensor:
    """Reorder q/k projection rows from the interleaved layout (Meta) to the half layout (HF).

    Within each head, rows ``[0, 1, 2, 3, ..., d-1]`` become ``[0, 2, 4, ..., d-2, 1, 3, ..., d-1]``
    (only the first ``rotary_dim`` rows with partial rotary). ``weight`` is ``(n_heads*head_dim, in)``
    or a bias ``(n_heads*head_dim,)``. After this, half-layout RoPE scores equal interleaved ones.
    """
    return _permute_rows(weight, n_heads, head_dim, _layout_perm(head_dim, rotary_dim, to_half=True))


def half_to_interleaved(
    weight: torch.Tensor, n_heads: int, head_dim: int, rotary_dim: int | None = None
) -> torch.Tensor:
    """Inverse of ``interleaved_to_half``: HF half-layout q/k rows back to the interleaved order."""
    return _permute_rows(weight, n_heads, head_dim, _layout_perm(head_dim, rotary_dim, to_half=False))
