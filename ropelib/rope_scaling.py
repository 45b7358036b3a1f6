"""RoPE scaling: an HF-style rope config -> inverse frequencies and attention factor (HF's ``modeling_rope_utils``).

RoPE: Su et al. 2021, RoFormer, arXiv 2104.09864, §3.4 (eq. 13-16): pair ``i`` of a query/key vector at
integer position ``m`` is turned by the angle ``m * theta_i``, ``theta_i = b^(-2i/d)``.
Scaling variants (docs/references.md §3), one record each (``RopeType``) in the registry ``ROPE_TYPES``,
keyed by HF transformers' ``rope_type`` names and computing the same float32 values as
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

A record holds everything per-type code needs: the frequency function, the keys it requires and the
ones it reads if set, the length its scaling is relative to, how the input length enters (``dynamic``,
``longrope``), and its value checks. ``RopeConfig`` (a frozen dataclass with HF's key names) is
validated in one place, ``_validate_config``, from the record; ``frequency_key`` derives the cache key
of ``ropelib.rope.RoPE``; ``ropelib.encodings.rope.RoPEEncoding`` takes ``RopeConfig``'s fields as its
parameters. ``rope_frequencies(config, head_dim, seq_len)`` returns ``(inv_freq, attention_factor)``;
``rope_config_from_hf`` reads a whole transformers model config. The rotation itself (cos/sin tables,
kernels, the ``RoPE`` module) is ``ropelib.rope``.

Deliberate differences from HF (the frequencies themselves are equal): configs that HF only warns
about (``factor < 1``, wrong-length LongRoPE factors, missing ``original_max_position_embeddings``) raise
``ValueError`` here; set keys that a type does not read are flagged like HF's ``_check_received_keys``
(a warning, see ``UnusedRopeKeyWarning``).

Adding a type: one ``RopeType`` record in ``_RECORDS`` (its frequency function, keys, length, checks)
and its tests (docs/design.md §3, "Adding a RoPE type").
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import torch

__all__ = [
    "ROPE_TYPES",
    "RopeType",
    "RopeConfig",
    "UnusedRopeKeyWarning",
    "rope_frequencies",
    "frequency_key",
    "rope_config_from_hf",
]


class UnusedRopeKeyWarning(UserWarning):
    """A set RoPE config key that the config's ``rope_type`` does not read (it changes nothing).

    A warning, not an error, as in HF (``_check_received_keys`` logs "Unrecognized keys"): such a key
    cannot make the numbers wrong, and real configs carry them (a key left over from ``replace`` to
    another type, a model's extra keys). ropelib raises only where the numbers would be wrong or
    undefined: an unknown key name, a missing required key, an invalid value.
    """


# ---------------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class RopeConfig:
    """A validated RoPE config with HF transformers' key names (``rope_parameters`` in HF v5).

    Every field but ``rope_theta`` and ``rope_type`` defaults to ``None`` ("not given"). What a type
    requires and reads is its record, ``ROPE_TYPES[rope_type]`` (``RopeType.required``, ``optional``,
    ``length_keys``); every type also reads ``rope_theta`` and ``partial_rotary_factor``. A set key the
    type does not read raises ``UnusedRopeKeyWarning``. ``yarn``, ``llama3`` and ``longrope`` require
    ``original_max_position_embeddings`` (the pre-training length): HF silently falls back to
    ``max_position_embeddings``, which for a scaled model is the *extended* length, and then computes
    YaRN's correction range / Llama 3's bands / LongRoPE's switch from the wrong length (a known bug
    class); ropelib requires it explicitly instead. ``longrope``'s ``factor``, if absent, is inferred as
    ``max_position_embeddings / original_max_position_embeddings`` like HF (needed only when
    ``attention_factor`` is not given).
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
    def from_mapping(cls, config: Mapping[str, Any] | RopeConfig) -> RopeConfig:
        """Build from a plain mapping with HF keys; the legacy key ``type`` is read as ``rope_type``.

        Keys whose value is ``None`` count as absent. An unknown key raises ``ValueError`` listing the
        accepted keys.
        """
        if isinstance(config, RopeConfig):
            return config
        if not isinstance(config, Mapping):
            raise ValueError(f"RoPE config must be a mapping with HF keys, got {type(config).__name__}")
        items = _read_legacy_type({k: v for k, v in config.items() if v is not None})
        allowed = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(items) - set(allowed))
        if unknown:
            raise ValueError(
                f"unknown RoPE config key(s) {', '.join(map(repr, unknown))}; accepted: {', '.join(allowed)} "
                "(and the legacy 'type')"
            )
        return cls(**items)

    def replace(self, **changes: Any) -> RopeConfig:
        """A copy with some keys changed (``None`` clears a key back to its default; the legacy ``type``
        sets ``rope_type``), re-validated."""
        merged = {**self.as_dict(), **_read_legacy_type(changes)}
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
        if ROPE_TYPES[self.rope_type].rotates_whole_head:
            return head_dim
        rd = int(head_dim * (self.partial_rotary_factor if self.partial_rotary_factor is not None else 1.0))
        if rd < 2 or rd % 2:
            raise ValueError(
                f"rotary dimension int(head_dim * partial_rotary_factor) = int({head_dim} * "
                f"{self.partial_rotary_factor}) = {rd} must be even and >= 2"
            )
        return rd

    def original_length(self) -> int | None:
        """The training length the type's scaling is relative to: the first set key of the record's
        ``length_keys`` (``None`` for types without one)."""
        for key in ROPE_TYPES[self.rope_type].length_keys:
            if getattr(self, key) is not None:
                return getattr(self, key)
        return None


def _read_legacy_type(items: Mapping[str, Any]) -> dict[str, Any]:
    """``items`` with HF's legacy key ``type`` renamed ``rope_type`` (a conflicting pair raises)."""
    items = dict(items)
    if "type" in items:
        legacy = items.pop("type")
        if items.get("rope_type") is not None and legacy is not None and items["rope_type"] != legacy:
            raise ValueError(f"conflicting RoPE type keys: rope_type={items['rope_type']!r} and legacy type={legacy!r}")
        if items.get("rope_type") is None:
            items["rope_type"] = legacy
    return items


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_head_dim(head_dim: Any) -> None:
    if not isinstance(head_dim, int) or isinstance(head_dim, bool) or head_dim < 2 or head_dim % 2:
        raise ValueError(f"head_dim must be an even integer >= 2 (RoPE rotates pairs), got {head_dim!r}")


#: keys every type reads (besides its record's): the base and the rotated fraction of the head
COMMON_KEYS = ("rope_theta", "rope_type", "partial_rotary_factor")

#: why a required key is needed, for the "requires ..." message
_WHY = {
    "factor": "the scale factor s = extended length / original length",
    "original_max_position_embeddings": "the pre-training context length; HF would silently use "
    "max_position_embeddings, which is the extended length for a scaled model",
    "low_freq_factor": "Llama 3 band edges L/low and L/high",
    "high_freq_factor": "Llama 3 band edges L/low and L/high",
    "short_factor": "LongRoPE's per-pair rescale factors",
    "long_factor": "LongRoPE's per-pair rescale factors",
}


def _validate_config(c: RopeConfig) -> None:
    """The one validation of a RoPE config: values of every set key, then the record's keys and checks."""
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

    record = ROPE_TYPES[c.rope_type]
    missing = [k for k in record.required if getattr(c, k) is None]
    if missing:  # the first missing key, with the others missing for the same reason
        why = _WHY.get(missing[0], "")
        missing = [k for k in missing if _WHY.get(k, "") == why]
        raise ValueError(
            f"rope_type {c.rope_type!r} requires {', '.join(map(repr, missing))}, which is missing"
            + (f": {why}" if why else "")
        )
    if record.length_keys and c.original_length() is None:
        raise ValueError(
            f"rope_type {c.rope_type!r} requires the length the model was trained at, as "
            f"{' or '.join(map(repr, record.length_keys))} (the first one set is used; "
            f"'max_position_embeddings' is HF's key for it with 'dynamic'); neither is given"
        )
    if record.check is not None:
        record.check(c)
    unused = [k for k in c.as_dict() if k not in record.keys()]
    if unused:
        warnings.warn(
            f"rope_type {c.rope_type!r} does not use {', '.join(map(repr, unused))} (ignored); it reads "
            f"{', '.join(record.keys())}",
            UnusedRopeKeyWarning,
            stacklevel=4,
        )


def _check_yarn(c: RopeConfig) -> None:
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


def _check_llama3(c: RopeConfig) -> None:
    if c.low_freq_factor <= 0:
        raise ValueError(
            f"low_freq_factor must be > 0 (the low-frequency band edge is "
            f"original_max_position_embeddings / low_freq_factor), got {c.low_freq_factor!r}"
        )
    if c.high_freq_factor <= c.low_freq_factor:
        raise ValueError(
            f"high_freq_factor ({c.high_freq_factor}) must be greater than low_freq_factor ({c.low_freq_factor})"
        )


def _check_longrope(c: RopeConfig) -> None:
    if c.factor is None and c.attention_factor is None and c.max_position_embeddings is None:
        raise ValueError(
            "rope_type 'longrope' needs 'factor', or 'max_position_embeddings' to infer it "
            "(factor = max_position_embeddings / original_max_position_embeddings), or 'attention_factor'"
        )


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


#: how the input length enters a type's frequencies (``RopeType.length_dependence``)
LENGTH_DEPENDENCES = ("none", "max", "threshold")


@dataclasses.dataclass(frozen=True)
class RopeType:
    """One RoPE scaling type: everything ropelib's per-type code needs (one record per HF ``rope_type``).

    Like HF's ``ROPE_INIT_FUNCTIONS[rope_type]`` plus its ``_validate_<type>_rope_parameters``, in one
    record. ``frequencies(config, head_dim, seq_len) -> (inv_freq (rotary_dim//2,) float32,
    attention_factor)``. ``required``: keys that must be set (named in the error when missing);
    ``optional``: keys read when set. ``length_keys``: the training length the scaling is relative to,
    the first of them that is set (one must be); ``()`` for types without one. ``length_dependence``:
    how ``seq_len`` enters, which makes the cache key (``frequency_key``): ``"none"``; ``"max"``
    (``dynamic``: the frequencies of ``max(seq_len, L)``); ``"threshold"`` (``longrope``: one set up to
    ``L``, another beyond). ``rotates_whole_head``: ``partial_rotary_factor`` selects frequencies, not
    rotated coordinates (``proportional``). ``check(config)``: the type's value checks (raise
    ``ValueError``), run after the required keys are known to be set. ``reference``: paper / source.
    """

    name: str
    frequencies: Callable[[RopeConfig, int, int | None], tuple[torch.Tensor, float]]
    reference: str
    required: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    length_keys: tuple[str, ...] = ()
    length_dependence: str = "none"
    rotates_whole_head: bool = False
    check: Callable[[RopeConfig], None] | None = None

    def __post_init__(self) -> None:
        fields = {f.name for f in dataclasses.fields(RopeConfig)}
        bad = sorted(set(self.required + self.optional + self.length_keys) - fields)
        if bad:
            raise ValueError(f"RopeType {self.name!r}: {bad} are not RopeConfig fields; accepted: {sorted(fields)}")
        if self.length_dependence not in LENGTH_DEPENDENCES:
            raise ValueError(
                f"RopeType {self.name!r}: length_dependence {self.length_dependence!r}; known: {LENGTH_DEPENDENCES}"
            )
        if self.length_dependence != "none" and not self.length_keys:
            raise ValueError(f"RopeType {self.name!r}: a length-dependent type needs length_keys")

    def keys(self) -> tuple[str, ...]:
        """Every key this type reads: the common ones, then required, length and optional keys."""
        out: list[str] = []
        for key in COMMON_KEYS + self.required + self.length_keys + self.optional:
            if key not in out:
                out.append(key)
        return tuple(out)


_ORIGINAL = ("original_max_position_embeddings",)
_RECORDS = (
    RopeType("default", _freq_default, "RoFormer, Su et al. 2021, arXiv 2104.09864 §3.4"),
    RopeType("linear", _freq_linear, "Position Interpolation, Chen et al. 2023, arXiv 2306.15595 §2.3", ("factor",)),
    RopeType("ntk", _freq_ntk, "NTK-aware scaling, bloc97 2023; YaRN arXiv 2309.00071 §3.1", ("factor",)),
    RopeType(
        "dynamic",
        _freq_dynamic,
        "dynamic NTK, YaRN arXiv 2309.00071 §3.3; HF",
        ("factor",),
        length_keys=("max_position_embeddings", "original_max_position_embeddings"),
        length_dependence="max",
    ),
    RopeType(
        "yarn",
        _freq_yarn,
        "YaRN, Peng et al. 2023, arXiv 2309.00071 §3.2-3.4; DeepSeek-V2 mscale",
        ("factor", *_ORIGINAL),
        ("beta_fast", "beta_slow", "mscale", "mscale_all_dim", "truncate", "attention_factor"),
        length_keys=_ORIGINAL,
        check=_check_yarn,
    ),
    RopeType(
        "llama3",
        _freq_llama3,
        "Meta Llama 3.1, llama-models apply_scaling",
        ("factor", *_ORIGINAL, "low_freq_factor", "high_freq_factor"),
        length_keys=_ORIGINAL,
        check=_check_llama3,
    ),
    RopeType(
        "longrope",
        _freq_longrope,
        "LongRoPE, Ding et al. 2024, arXiv 2402.13753 §3; Phi-3 attention factor",
        (*_ORIGINAL, "short_factor", "long_factor"),
        ("factor", "attention_factor", "max_position_embeddings"),
        length_keys=_ORIGINAL,
        length_dependence="threshold",
        check=_check_longrope,
    ),
    RopeType(
        "proportional",
        _freq_proportional,
        "p-RoPE, Barbero et al. 2024, arXiv 2410.06205 §5",
        optional=("factor",),
        rotates_whole_head=True,
    ),
)
#: rope_type -> its record
ROPE_TYPES: dict[str, RopeType] = {t.name: t for t in _RECORDS}


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
    inv_freq, attention_factor = ROPE_TYPES[c.rope_type].frequencies(c, head_dim, seq_len)
    return inv_freq.to(torch.float32), float(attention_factor)


def frequency_key(config: RopeConfig, seq_len: int | None) -> tuple[Any, int | None]:
    """``(key, seq_len)``: what the frequencies at input length ``seq_len`` depend on, and a length that
    gives them. Equal keys give equal frequencies (``ropelib.rope.RoPE`` caches by the key); from the
    record's ``length_dependence``: ``None`` for ``"none"``; ``max(seq_len, L)`` for ``"max"``;
    ``seq_len > L`` for ``"threshold"`` (``L`` = ``config.original_length()``, ``None`` = within it)."""
    dependence = ROPE_TYPES[config.rope_type].length_dependence
    length = config.original_length()
    if dependence == "max":
        key = length if seq_len is None else max(int(seq_len), length)
        return key, key
    if dependence == "threshold":
        key = bool(seq_len) and seq_len > length
        return key, (length + 1 if key else None)
    return None, None


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
      ``longrope``'s implicit factor), for the types whose record reads it.
    * ``original_max_position_embeddings`` for the types relative to it (``yarn``/``llama3``/``longrope``,
      ``RopeType.length_keys``): a top-level one (Phi-3
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
    if _model_get(config, "model_type") == "phi3":  # HF's Phi3Config reads the legacy 'su' and 'yarn' as
        for key in ("type", "rope_type"):  # 'longrope' (and keeps the old 'type' next to it)
            if rope.get(key) in ("su", "yarn"):
                rope[key] = "longrope"
    record = ROPE_TYPES.get(rope.get("rope_type") or rope.get("type") or "default")
    max_pos = _model_get(config, "max_position_embeddings")
    if max_pos is not None and (record is None or "max_position_embeddings" in record.keys()):
        rope["max_position_embeddings"] = max_pos
    original = _model_get(config, "original_max_position_embeddings")
    if original is not None and record is not None and record.length_keys == _ORIGINAL:
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


def rope_config_from_hf(
    config: Any, head_dim: int | None = None, layer_type: str | None = None
) -> tuple[RopeConfig, int]:
    """``(RopeConfig, head_dim)`` from an HF model config (object or dict) or a bare rope mapping plus
    ``head_dim``; ``ropelib.rope.RoPE.from_hf_config`` documents the forms and priorities."""
    if _is_model_config(config):
        return _rope_from_model_config(config, head_dim, layer_type)
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
    return RopeConfig.from_mapping(config), head_dim
