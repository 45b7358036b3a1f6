"""Published RoPE settings of well-known models, for the spectrum notebooks (02, 03).

Each entry records what a model's Hugging Face ``config.json`` says about its rotary embedding: head
dimension, ``rope_theta``, the ``rope_scaling`` dict (HF keys), ``max_position_embeddings``, the
length the rotary frequencies were trained at (``training_length``: ``original_max_position_embeddings``
for extended models), and ``partial_rotary_factor``. The source (HF repository) is named in a comment
above each entry, and in ``PublishedRoPE.source``.

RoPE itself: Su et al. 2021, RoFormer, arXiv 2104.09864 §3.4. Scaling types: PI (arXiv 2306.15595),
YaRN (arXiv 2309.00071), Llama 3 (Meta llama-models), LongRoPE (arXiv 2402.13753); see docs/references.md §3.

``rope_parameters()`` gives the flat HF-style dict (``rope_type``, ``rope_theta``, scaling keys,
``partial_rotary_factor``) that ``ropelib.rope_scaling.rope_frequencies`` accepts.

    >>> from ropelib.published_rope import get_model_config
    >>> cfg = get_model_config("llama-2-7b")
    >>> cfg.head_dim, cfg.rope_theta, cfg.training_length
    (128, 10000.0, 4096)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

__all__ = ["PublishedRoPE", "MODEL_CONFIGS", "TOY", "get_model_config", "model_config_names"]


@dataclass(frozen=True)
class PublishedRoPE:
    """The rotary-embedding settings of one published model (values from its HF ``config.json``).

    ``rope_scaling`` uses HF's keys (``rope_type``, ``factor``, ``original_max_position_embeddings``,
    ``low_freq_factor``, ``high_freq_factor``, ``short_factor``, ``long_factor``, …) and is empty for
    models without scaling. ``training_length`` is the context the frequencies were trained at
    (``original_max_position_embeddings`` for extended models).
    """

    name: str
    source: str
    head_dim: int
    rope_theta: float
    max_position_embeddings: int
    training_length: int
    rope_scaling: Mapping[str, Any] = field(default_factory=dict)
    partial_rotary_factor: float = 1.0
    note: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.head_dim, int) or self.head_dim < 2 or self.head_dim % 2:
            raise ValueError(f"{self.name}: head_dim must be an even integer >= 2, got {self.head_dim!r}")
        if not self.rope_theta > 1:
            raise ValueError(f"{self.name}: rope_theta must be > 1, got {self.rope_theta!r}")
        if not 0 < self.partial_rotary_factor <= 1:
            raise ValueError(
                f"{self.name}: partial_rotary_factor must be in (0, 1], got {self.partial_rotary_factor!r}"
            )
        if self.rotary_dim % 2:
            raise ValueError(f"{self.name}: rotary dim {self.rotary_dim} must be even")
        # freeze the scaling dict (lists become tuples) so the dataclass really is immutable
        frozen = {k: tuple(v) if isinstance(v, list) else v for k, v in dict(self.rope_scaling).items()}
        object.__setattr__(self, "rope_scaling", MappingProxyType(frozen))

    @property
    def rotary_dim(self) -> int:
        """Number of rotated dimensions: ``int(head_dim * partial_rotary_factor)`` (HF's rule)."""
        return int(self.head_dim * self.partial_rotary_factor)

    @property
    def rope_type(self) -> str:
        """HF ``rope_type`` (``"default"`` when the model has no scaling)."""
        return str(self.rope_scaling.get("rope_type", "default"))

    def rope_parameters(self) -> dict[str, Any]:
        """Flat HF-style RoPE dict: ``rope_type``, ``rope_theta``, scaling keys, ``partial_rotary_factor``.

        Lists (LongRoPE factors) come back as fresh Python lists; the caller may modify the dict.
        """
        params: dict[str, Any] = {"rope_type": self.rope_type, "rope_theta": float(self.rope_theta)}
        for key, value in self.rope_scaling.items():
            params[key] = list(value) if isinstance(value, tuple) else value
        if self.partial_rotary_factor != 1.0:
            params["partial_rotary_factor"] = self.partial_rotary_factor
        return params


# --- Phi-3-mini-128k LongRoPE factors ------------------------------------------------------------
# microsoft/Phi-3-mini-128k-instruct, config.json of the original (April 2024) release, where the
# rope_scaling type was "su" (HF renamed it "longrope"); 48 values = head_dim 96 / 2. Found through the
# search index as the phi3_mini_128k builder of a torchtune fork (torchtune/models/phi3/
# _model_builders.py: LONG_FACTORS / SHORT_FACTORS); the long_factor list is the same one
# Phi-3-vision-128k-instruct ships. The July 2024 update of Phi-3-mini-128k-instruct replaced these
# lists, so this entry is the April 2024 checkpoint.
_PHI3_LONG_FACTOR = (
    1.0299999713897705,
    1.0499999523162842,
    1.0499999523162842,
    1.0799999237060547,
    1.2299998998641968,
    1.2299998998641968,
    1.2999999523162842,
    1.4499999284744263,
    1.5999999046325684,
    1.6499998569488525,
    1.8999998569488525,
    2.859999895095825,
    3.68999981880188,
    5.419999599456787,
    5.489999771118164,
    5.489999771118164,
    9.09000015258789,
    11.579999923706055,
    15.65999984741211,
    15.769999504089355,
    15.789999961853027,
    18.360000610351562,
    21.989999771118164,
    23.079999923706055,
    30.009998321533203,
    32.35000228881836,
    32.590003967285156,
    35.56000518798828,
    39.95000457763672,
    53.840003967285156,
    56.20000457763672,
    57.95000457763672,
    59.29000473022461,
    59.77000427246094,
    59.920005798339844,
    61.190006256103516,
    61.96000671386719,
    62.50000762939453,
    63.3700065612793,
    63.48000717163086,
    63.48000717163086,
    63.66000747680664,
    63.850006103515625,
    64.08000946044922,
    64.760009765625,
    64.80001068115234,
    64.81001281738281,
    64.81001281738281,
)
_PHI3_SHORT_FACTOR = (
    1.05,
    1.05,
    1.05,
    1.1,
    1.1,
    1.1500000000000001,
    1.2000000000000002,
    1.2500000000000002,
    1.3000000000000003,
    1.3500000000000003,
    1.5000000000000004,
    2.000000000000001,
    2.000000000000001,
    2.000000000000001,
    2.000000000000001,
    2.000000000000001,
    2.000000000000001,
    2.000000000000001,
    2.000000000000001,
    2.000000000000001,
    2.000000000000001,
    2.000000000000001,
    2.000000000000001,
    2.000000000000001,
    2.000000000000001,
    2.000000000000001,
    2.000000000000001,
    2.000000000000001,
    2.000000000000001,
    2.000000000000001,
    2.000000000000001,
    2.000000000000001,
    2.0500000000000007,
    2.0500000000000007,
    2.0500000000000007,
    2.1000000000000005,
    2.1000000000000005,
    2.1000000000000005,
    2.1500000000000004,
    2.1500000000000004,
    2.3499999999999996,
    2.549999999999999,
    2.5999999999999988,
    2.5999999999999988,
    2.7499999999999982,
    2.849999999999998,
    2.849999999999998,
    2.9499999999999975,
)

_ENTRIES = (
    # meta-llama/Llama-2-7b-hf: hidden 4096 / 32 heads, rope_theta 10000 (default), 4096 positions.
    PublishedRoPE(
        name="llama-2-7b",
        source="meta-llama/Llama-2-7b-hf",
        head_dim=128,
        rope_theta=10_000.0,
        max_position_embeddings=4096,
        training_length=4096,
    ),
    # meta-llama/Llama-3.1-8B: hidden 4096 / 32 heads, rope_theta 500000, rope_scaling llama3
    # (factor 8, low_freq_factor 1, high_freq_factor 4, original 8192), max_position_embeddings 131072.
    PublishedRoPE(
        name="llama-3.1-8b",
        source="meta-llama/Llama-3.1-8B",
        head_dim=128,
        rope_theta=500_000.0,
        max_position_embeddings=131_072,
        training_length=8192,
        rope_scaling={
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        },
    ),
    # mistralai/Mistral-7B-v0.1: hidden 4096 / 32 heads, rope_theta 10000, max_position_embeddings
    # 32768, sliding_window 4096; the paper (arXiv 2310.06825, Table 1) gives context_len 8192.
    PublishedRoPE(
        name="mistral-7b-v0.1",
        source="mistralai/Mistral-7B-v0.1",
        head_dim=128,
        rope_theta=10_000.0,
        max_position_embeddings=32_768,
        training_length=8192,
        note="v0.1 only: Mistral-7B-v0.2 and later use rope_theta 1e6 and no sliding window",
    ),
    # Qwen/Qwen2.5-7B-Instruct: hidden 3584 / 28 heads = 128, rope_theta 1e6, 32768 positions,
    # rope_scaling null in config.json.
    PublishedRoPE(
        name="qwen2.5-7b",
        source="Qwen/Qwen2.5-7B-Instruct",
        head_dim=128,
        rope_theta=1_000_000.0,
        max_position_embeddings=32_768,
        training_length=32_768,
    ),
    # Qwen/Qwen2.5-7B-Instruct model card ("Processing Long Texts"): add rope_scaling
    # {"factor": 4.0, "original_max_position_embeddings": 32768, "type": "yarn"} for 131072 tokens.
    PublishedRoPE(
        name="qwen2.5-7b-yarn",
        source="Qwen/Qwen2.5-7B-Instruct (model card, long-text setting)",
        head_dim=128,
        rope_theta=1_000_000.0,
        max_position_embeddings=131_072,
        training_length=32_768,
        rope_scaling={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32_768},
        note="the YaRN setting the model card recommends for inputs past 32768 tokens",
    ),
    # EleutherAI/gpt-neox-20b: hidden 6144 / 64 heads = 96, rotary_pct 0.25 (24 rotated dims),
    # rotary_emb_base 10000, 2048 positions. The Pythia suite (EleutherAI/pythia-*) uses the same
    # rotary_pct 0.25 and base.
    PublishedRoPE(
        name="gpt-neox-20b",
        source="EleutherAI/gpt-neox-20b",
        head_dim=96,
        rope_theta=10_000.0,
        max_position_embeddings=2048,
        training_length=2048,
        partial_rotary_factor=0.25,
    ),
    # microsoft/Phi-3-mini-128k-instruct (April 2024 release): hidden 3072 / 32 heads = 96,
    # rope_theta 10000, original_max_position_embeddings 4096, max_position_embeddings 131072,
    # LongRoPE factors above. HF computes the attention factor sqrt(1 + ln(32)/ln(4096)).
    PublishedRoPE(
        name="phi-3-mini-128k",
        source="microsoft/Phi-3-mini-128k-instruct",
        head_dim=96,
        rope_theta=10_000.0,
        max_position_embeddings=131_072,
        training_length=4096,
        rope_scaling={
            "rope_type": "longrope",
            "short_factor": _PHI3_SHORT_FACTOR,
            "long_factor": _PHI3_LONG_FACTOR,
            "original_max_position_embeddings": 4096,
            # not in config.json: HF derives it as max_position_embeddings / original = 131072 / 4096
            "factor": 32.0,
        },
        note="April 2024 factors (rope_scaling type 'su'); the July 2024 update ships other lists",
    ),
    # NousResearch/Yarn-Llama-2-7b-64k: Llama 2 7B fine-tuned with YaRN, rope_scaling
    # {"type": "yarn", "factor": 16.0, "original_max_position_embeddings": 4096} (YaRN paper §4:
    # s = 16 for 64k, s = 32 for 128k), max_position_embeddings 65536.
    PublishedRoPE(
        name="yarn-llama-2-7b-64k",
        source="NousResearch/Yarn-Llama-2-7b-64k",
        head_dim=128,
        rope_theta=10_000.0,
        max_position_embeddings=65_536,
        training_length=4096,
        rope_scaling={"rope_type": "yarn", "factor": 16.0, "original_max_position_embeddings": 4096},
    ),
    # The toy model the experiment notebooks train (ropelib.model.ModelConfig defaults: d_model 128,
    # 4 heads -> head_dim 32; RoPE base 1e4; training length 128). Not a published model.
    PublishedRoPE(
        name="toy",
        source="ropelib toy model (ModelConfig defaults)",
        head_dim=32,
        rope_theta=10_000.0,
        max_position_embeddings=128,
        training_length=128,
        note="the tiny model of the experiment notebooks, for scale",
    ),
)

#: every entry by name (insertion order: published models, then the toy model)
MODEL_CONFIGS: Mapping[str, PublishedRoPE] = MappingProxyType({e.name: e for e in _ENTRIES})

#: the toy model's settings
TOY: PublishedRoPE = MODEL_CONFIGS["toy"]


def model_config_names() -> list[str]:
    """Names of every entry in ``MODEL_CONFIGS``."""
    return list(MODEL_CONFIGS)


def get_model_config(name: str) -> PublishedRoPE:
    """The entry called ``name``; an unknown name raises ``ValueError`` listing the known ones."""
    try:
        return MODEL_CONFIGS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown model config {name!r}; known: {', '.join(MODEL_CONFIGS)}") from None
