"""The GPU path (issue 16): bf16 autocast keeps RoPE's angles in float32 or wider, the SDPA backend check,
the device resolution, the CUDA-only optimiser and batch copies, and a CUDA-vs-CPU parity test (skipped
without CUDA). Everything here but the parity test runs on a CPU."""

from __future__ import annotations

import pytest
import torch

from ropelib.data import make_task
from ropelib.encodings import ENCODINGS
from ropelib.model import ModelConfig, ToyTransformer, resolve_device
from ropelib.sdpa_backends import BACKEND_COLUMNS, BACKENDS, backend_table
from ropelib.train import TrainConfig, _optimizer, _to_device, train

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread (conftest.py)

BIAS_ENCODINGS = {"t5", "alibi", "kerple", "fire"}  # an additive bias: a float mask, not is_causal
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _tiny(encoding: str = "rope", **params) -> ToyTransformer:
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=32, n_layers=2, n_heads=4, d_model=64, encoding=encoding, encoding_params=params)
    return ToyTransformer(config)


def _ids(batch: int = 2, length: int = 32) -> torch.Tensor:
    return torch.randint(0, 32, (batch, length), generator=torch.Generator().manual_seed(0))  # (B, T)


# -- bf16 autocast -----------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["rope", "xpos", "alibi", "t5", "nope"])
def test_bf16_autocast_logits_are_close_to_float32(encoding):
    # bf16 keeps 8 significant bits (unit roundoff 2^-8 = 0.0039); logits of magnitude ~1 after two layers
    # of bf16 matmuls differ from float32 by a few roundoffs (0.004 measured): atol 0.03 is ~8 roundoffs,
    # far below what a wrong rotation or mask would give (differences of order 1)
    model = _tiny(encoding).eval()
    x = _ids()
    with torch.no_grad():
        reference = model(x)  # (B, T, V) float32
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x)  # (B, T, V)
    assert low.dtype == torch.float32  # the head's output is cast back (ropelib.model)
    torch.testing.assert_close(low, reference, atol=3e-2, rtol=2e-2)


def test_rope_angles_and_tables_stay_float32_or_wider_under_bf16_autocast():
    model = _tiny("rope").eval()  # the default layout: interleaved
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        model(_ids())
    entries = list(model.encoding.rope._tables.values())
    assert entries
    for entry in entries:
        assert entry["cos64"].dtype == entry["sin64"].dtype == torch.float64  # the angles' cos/sin
        tables = {name: t for name, t in entry.items() if ":" in name}
        assert tables and all(t.dtype == torch.complex64 for t in tables.values()), tables  # float32 parts


def test_half_layout_tables_are_the_float64_angles_rounded_once_under_bf16_autocast():
    # HF's layout rotates in the compute dtype, as HF does (cos/sin computed wide, then ``.to(x.dtype)``):
    # the angles and their cos/sin stay float64, and each bf16 table is exactly that float64 value rounded
    # once -- never an angle formed in bf16 (bf16 holds positions exactly only up to 256)
    model = _tiny("rope", layout="half").eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        model(_ids())
    entries = list(model.encoding.rope._tables.values())
    assert entries
    for entry in entries:
        cos64, sin64 = entry["cos64"], entry["sin64"]
        assert cos64.dtype == sin64.dtype == torch.float64
        expected = {
            "cos_full": torch.cat((cos64, cos64), dim=-1),
            "sin": sin64,
            "neg_sin": -sin64,
            "cos": cos64,
        }
        tables = {name: t for name, t in entry.items() if ":" in name}
        assert tables
        for key, table in tables.items():
            name, dtype = key.split(":")
            assert dtype == "torch.bfloat16", key
            assert table.dtype == torch.bfloat16
            torch.testing.assert_close(table, expected[name].to(torch.bfloat16), atol=0, rtol=0)


# -- SDPA backends -----------------------------------------------------------------------------------


def test_backend_table_on_cpu_runs_math_for_every_encoding():
    table = backend_table("cpu", length=16, n_heads=2, head_dim=8)
    assert list(table.columns) == BACKEND_COLUMNS
    assert len(table) == len(ENCODINGS) * len(BACKENDS)
    assert table[table.backend == "MATH"].works.all()
    assert not table[table.backend.isin(["EFFICIENT_ATTENTION", "CUDNN_ATTENTION"])].works.any()  # CUDA kernels
    masks = table.drop_duplicates("encoding").set_index("encoding")["mask"]
    for name, mask in masks.items():
        assert (mask == "is_causal") == (name not in BIAS_ENCODINGS), (name, mask)
    assert set(table.dtype) == {"float32"}


def test_backend_table_rejects_bad_input():
    with pytest.raises(ValueError, match="unknown encoding"):
        backend_table("cpu", ["rotary"])
    with pytest.raises(ValueError, match="length"):
        backend_table("cpu", ["rope"], length=1)
    with pytest.raises(ValueError, match="device"):
        backend_table(3)


# -- devices -----------------------------------------------------------------------------------------


def test_resolve_device_takes_names_and_devices_and_names_bad_values():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(ValueError, match=r"'tpu'.*allowed"):
        resolve_device("tpu")
    with pytest.raises(ValueError, match=r"got 0 \(int\)"):
        resolve_device(0)


def test_train_refuses_a_device_that_contradicts_its_config():
    config = TrainConfig(steps=1, batch_size=2, seq_len=8, warmup_steps=0, device="cuda")
    with pytest.raises(ValueError, match="contradicts"):
        train(_tiny(), make_task("chars"), config, progress=False, device=torch.device("cpu"))


def test_cpu_training_uses_the_default_adamw_and_plain_copies():
    model = _tiny()
    optimizer = _optimizer(model, TrainConfig(), torch.device("cpu"))
    assert optimizer.param_groups[0]["fused"] is None and optimizer.param_groups[0]["foreach"] is None
    t = torch.arange(4)
    assert _to_device(t, torch.device("cpu")) is t  # no copy, no pinning on the CPU


@CUDA
def test_cuda_training_uses_fused_adamw_and_pinned_copies():
    device = torch.device("cuda")
    model = _tiny().to(device)
    assert _optimizer(model, TrainConfig(), device).param_groups[0]["fused"] is True
    moved = _to_device(torch.arange(4), device)
    assert moved.device.type == "cuda" and torch.equal(moved.cpu(), torch.arange(4))


# -- CUDA vs CPU parity ------------------------------------------------------------------------------


@CUDA
@pytest.mark.parametrize("encoding", ["rope", "alibi"])
def test_cuda_matches_cpu_for_a_tiny_model(encoding, monkeypatch):
    # float32 on both (amp off, TF32 off): logits agree to float32 reduction-order noise. One AdamW step
    # (fused on CUDA, foreach on CPU) moves each weight by about lr * sign(grad) (Adam's first step), so a
    # gradient that is zero up to that noise may flip its sign: at most 2 * lr apart, and only rarely
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    x = _ids()
    task = make_task("chars")
    config = dict(steps=1, batch_size=2, seq_len=32, warmup_steps=0, checkpoint_every=0, amp=False)
    models, logits, losses = {}, {}, {}
    for name in ("cpu", "cuda"):
        model = _tiny(encoding)
        with torch.no_grad():
            logits[name] = model.to(name).eval()(x.to(name)).cpu()
        history = train(model, task, TrainConfig(device=name, **config), progress=False)
        losses[name] = history[0]["loss"]
        models[name] = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.testing.assert_close(logits["cuda"], logits["cpu"], atol=1e-4, rtol=1e-4)
    assert losses["cuda"] == pytest.approx(losses["cpu"], abs=1e-4)
    lr = TrainConfig(**config).lr
    for key, value in models["cpu"].items():
        diff = (models["cuda"][key] - value).abs()
        assert diff.max() <= 2 * lr + 1e-6, key
        assert (diff > 1e-4).float().mean() <= 1e-3, key
