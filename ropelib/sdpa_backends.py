"""Which of PyTorch's scaled-dot-product-attention kernels each positional encoding's attention can use.

``ToyTransformer`` attends through ``torch.nn.functional.scaled_dot_product_attention`` (``ropelib.model``):
with ``is_causal=True`` and no mask for the encodings without an additive bias (NoPE, sinusoidal, learned,
randomized, RoPE, xPos), with one additive float mask ``(1|B, H, T, T)`` (the bias plus ``-inf`` above the
diagonal) for the bias encodings (T5, ALiBi, KERPLE, FIRE). PyTorch chooses among four kernels
(``torch.nn.attention.SDPBackend``; docs of ``scaled_dot_product_attention`` and ``sdpa_kernel``): the
C++ math reference (``MATH``, always available), FlashAttention-2 (``FLASH_ATTENTION``; Dao 2023,
arXiv 2307.08691), memory-efficient attention (``EFFICIENT_ATTENTION``; Rabe & Staats 2021, arXiv
2112.05682, xFormers' kernel) and cuDNN's fused attention (``CUDNN_ATTENTION``). Each fused kernel has
input constraints (dtype, head dimension, mask, GPU generation); a call that meets none falls back to math.

``backend_table`` measures it on a device: for each encoding it runs one forward and backward pass of a
one-layer model under ``torch.nn.attention.sdpa_kernel([backend])`` for each backend (with bf16 autocast
on CUDA, as training runs) and records whether the call ran or what it raised. ``benchmarks/sdpa_backends.py``
prints the table. On a CPU only ``MATH`` and (PyTorch's CPU flash kernel) ``FLASH_ATTENTION`` exist.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterable, Iterator
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from .encodings import ENCODINGS
from .model import ModelConfig, ToyTransformer, resolve_device

__all__ = ["BACKENDS", "BACKEND_COLUMNS", "backend_table", "default_choice"]

#: the backends tried, by their ``SDPBackend`` name
BACKENDS: tuple[str, ...] = ("MATH", "FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION")
#: columns of ``backend_table``
BACKEND_COLUMNS = ["encoding", "mask", "backend", "works", "default", "error", "device", "dtype"]


@contextlib.contextmanager
def _recording_sdpa(calls: list[dict[str, Any]]) -> Iterator[None]:
    """Record the arguments of every ``F.scaled_dot_product_attention`` call made inside (the model looks
    the function up on ``torch.nn.functional`` at each call), calling the real function."""
    real = F.scaled_dot_product_attention

    def recorder(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, **kwargs):
        calls.append({"q": q, "k": k, "v": v, "attn_mask": attn_mask, "dropout_p": dropout_p, "is_causal": is_causal})
        return real(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, **kwargs)

    F.scaled_dot_product_attention = recorder
    try:
        yield
    finally:
        F.scaled_dot_product_attention = real


def default_choice(call: dict[str, Any]) -> str:
    """The backend PyTorch would pick for one recorded call (``torch._fused_sdp_choice``, a private
    function: ``"unknown"`` where it is missing or fails)."""
    choose = getattr(torch, "_fused_sdp_choice", None)
    if choose is None:
        return "unknown"
    try:
        index = choose(call["q"], call["k"], call["v"], call["attn_mask"], call["dropout_p"], call["is_causal"])
        return SDPBackend(index).name
    except Exception:  # noqa: BLE001 - a private API: report, never fail
        return "unknown"


def _model(encoding: str, n_heads: int, head_dim: int, device: torch.device) -> ToyTransformer:
    config = ModelConfig(vocab_size=16, n_layers=1, n_heads=n_heads, d_model=n_heads * head_dim, encoding=encoding)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return ToyTransformer(config).to(device).train()


def backend_table(
    device: str | torch.device = "auto",
    encodings: Iterable[str] | None = None,
    *,
    length: int = 128,
    batch_size: int = 2,
    n_heads: int = 4,
    head_dim: int = 64,
    amp: bool | None = None,
) -> pd.DataFrame:
    """One row per (encoding, backend): does the model's attention call run on that SDPA kernel alone?

    ``device``: a name (``select_device``) or a ``torch.device``. ``amp``: bf16 autocast (``None``: on
    CUDA only, as ``ropelib.train`` trains). Each encoding gets a one-layer ``ToyTransformer`` (its default
    encoding parameters, ``n_heads`` heads of ``head_dim``) and a ``(batch_size, length)`` batch; a forward
    and backward pass run under ``sdpa_kernel([backend])``. Columns ``BACKEND_COLUMNS``: ``mask`` is
    ``"is_causal"`` (no mask tensor) or ``"float (shape)"``; ``works`` whether the pass ran; ``default``
    the backend PyTorch picks with every kernel enabled (``default_choice``); ``error`` the first line
    of what a failing pass raised."""
    device = resolve_device(device)
    names = list(ENCODINGS if encodings is None else encodings)
    unknown = [n for n in names if n not in ENCODINGS]
    if unknown:
        raise ValueError(f"unknown encoding(s) {unknown}; known: {', '.join(ENCODINGS)}")
    for label, value in (("length", length), ("batch_size", batch_size), ("n_heads", n_heads), ("head_dim", head_dim)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 2:
            raise ValueError(f"{label} must be an integer >= 2, got {value!r}")
    use_amp = device.type == "cuda" if amp is None else bool(amp)
    dtype = torch.bfloat16 if use_amp else torch.float32
    x = torch.randint(0, 16, (batch_size, length), generator=torch.Generator().manual_seed(0)).to(device)  # (B, T)
    rows = []
    for name in names:
        model = _model(name, n_heads, head_dim, device)
        calls: list[dict[str, Any]] = []
        with _recording_sdpa(calls), torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            model(x)
        call = calls[0]
        mask = call["attn_mask"]
        mask_text = "is_causal" if mask is None else f"{str(mask.dtype).removeprefix('torch.')} {tuple(mask.shape)}"
        chosen = default_choice(call)
        for backend in BACKENDS:
            error = ""
            try:
                with warnings.catch_warnings(), sdpa_kernel([getattr(SDPBackend, backend)]):
                    warnings.simplefilter("ignore")  # PyTorch warns why each refused kernel was not used
                    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                        logits = model(x)  # (B, T, V)
                    logits.float().mean().backward()
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                works = True
            except RuntimeError as exc:
                works, error = False, (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            model.zero_grad(set_to_none=True)
            rows.append(
                {
                    "encoding": name,
                    "mask": mask_text,
                    "backend": backend,
                    "works": works,
                    "default": chosen,
                    "error": error,
                    "device": str(device),
                    "dtype": str(dtype).removeprefix("torch."),
                }
            )
    return pd.DataFrame(rows, columns=BACKEND_COLUMNS)
