"""Tests of ropelib.model: shapes, causality, KV-cache parity, attention capture, devices, config.

Every registered encoding is covered (``sorted(ENCODINGS)``), plus three toy encodings defined here —
one per hook (rotate / bias / embed) — so the model's plumbing of each hook is tested on its own.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ropelib.data import make_task
from ropelib.encodings import ENCODINGS, PositionalEncoding
from ropelib.model import KVCache, ModelConfig, ToyTransformer, maybe_compile, select_device


# -- toy encodings, one per hook ----------------------------------------------------------------
class ToyRotate(PositionalEncoding):
    """Half-split RoPE, angles in float64 from integer positions (arXiv 2104.09864 §3.4)."""

    def __init__(self, *, n_heads: int, head_dim: int, d_model: int, base: float = 10000.0) -> None:
        super().__init__(n_heads=n_heads, head_dim=head_dim, d_model=d_model)
        self.base = base

    def _turn(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        half = self.head_dim // 2
        inv = self.base ** (-torch.arange(half, dtype=torch.float64) * 2 / self.head_dim)
        ang = pos.to(torch.float64)[..., None] * inv  # (T, half)
        cos, sin = ang.cos().to(x.dtype), ang.sin().to(x.dtype)
        x1, x2 = x[..., :half], x[..., half:]
        return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)

    def rotate(self, q, k, q_positions, k_positions):
        return self._turn(q, q_positions), self._turn(k, k_positions)


class ToyBias(PositionalEncoding):
    """ALiBi-like learned-slope bias ``-slope_h * (i - j)`` (arXiv 2108.12409)."""

    def __init__(self, *, n_heads: int, head_dim: int, d_model: int) -> None:
        super().__init__(n_heads=n_heads, head_dim=head_dim, d_model=d_model)
        self.slopes = torch.nn.Parameter(torch.linspace(0.1, 0.5, n_heads))

    def bias(self, q_positions, k_positions):
        rel = (q_positions[:, None] - k_positions[None, :]).float()  # (Tq, Tk)
        return -self.slopes[:, None, None] * rel  # (H, Tq, Tk)


class ToyEmbed(PositionalEncoding):
    """Sinusoidal table added at the input (Vaswani et al. 2017 §3.5)."""

    def embed(self, x, positions):
        i = torch.arange(0, self.d_model, 2, dtype=torch.float64)
        ang = positions.to(torch.float64)[:, None] / 10000 ** (i / self.d_model)  # (T, C/2)
        pe = torch.stack([ang.sin(), ang.cos()], dim=-1).flatten(-2).to(x.dtype)  # (T, C)
        return x + pe


TOYS = {"_toy_rotate": ToyRotate, "_toy_bias": ToyBias, "_toy_embed": ToyEmbed}
ALL_ENCODINGS = sorted(ENCODINGS) + sorted(TOYS)


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread (conftest.py)


@pytest.fixture(autouse=True)
def _toy_encodings(monkeypatch):
    """Register the toy encodings for the duration of one test only."""
    for name, cls in TOYS.items():
        monkeypatch.setattr(cls, "name", name)
        monkeypatch.setitem(ENCODINGS, name, cls)


def tiny(encoding: str, vocab_size: int = 13, **kw) -> ToyTransformer:
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=vocab_size, n_layers=2, n_heads=2, d_model=16, encoding=encoding, **kw)
    return ToyTransformer(cfg).eval()


def tokens(B: int, T: int, V: int = 13, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(seed))


# -- shapes, causality, cache --------------------------------------------------------------------
@pytest.mark.parametrize("encoding", ALL_ENCODINGS)
def test_forward_shapes_and_attention(encoding):
    model = tiny(encoding)
    idx = tokens(3, 10)
    logits = model(idx)
    assert logits.shape == (3, 10, 13) and logits.dtype == torch.float32
    assert torch.isfinite(logits).all()
    logits2, attn = model(idx, return_attention=True)
    assert len(attn) == 2
    for a in attn:
        assert a.shape == (3, 2, 10, 10)
        torch.testing.assert_close(a.sum(-1), torch.ones(3, 2, 10))
        assert (a.triu(1) == 0).all()  # causal
    # the explicit (attention-capturing) path computes the same logits as SDPA
    torch.testing.assert_close(logits2, logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("encoding", ALL_ENCODINGS)
def test_causality(encoding):
    model = tiny(encoding)
    idx = tokens(2, 12)
    changed = idx.clone()
    changed[:, 7] = (changed[:, 7] + 1) % 13
    a, b = model(idx), model(changed)
    torch.testing.assert_close(a[:, :7], b[:, :7], atol=0, rtol=0)
    assert not torch.allclose(a[:, 7:], b[:, 7:])  # the change is seen from position 7 on


@pytest.mark.parametrize("encoding", ALL_ENCODINGS)
def test_kv_cache_matches_full_forward(encoding):
    model = tiny(encoding)
    idx = tokens(2, 14)
    full = model(idx)  # (B, T, V)
    cache = KVCache(model.config.n_layers)
    parts = [model(idx[:, :5], kv_cache=cache)]  # prefill: is_causal fast path
    parts.append(model(idx[:, 5:8], kv_cache=cache))  # a chunk after an offset: explicit mask
    for t in range(8, 14):  # single tokens
        parts.append(model(idx[:, t : t + 1], kv_cache=cache))
    assert len(cache) == 14
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=1e-5)


ROPE_VARIANTS = [
    {"rope_type": "linear", "factor": 2.0},
    {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 8},
    {"layout": "interleaved"},
    {"partial_rotary_factor": 0.5},
]


@pytest.mark.skipif("rope" not in ENCODINGS, reason="rope not registered")
@pytest.mark.parametrize("params", ROPE_VARIANTS, ids=lambda p: "-".join(f"{k}={v}" for k, v in p.items()))
def test_kv_cache_matches_full_forward_rope_variants(params):
    """Offsets reach RoPE through the positions: static scalings and layouts stay exact with a cache."""
    model = tiny("rope", encoding_params=params)
    idx = tokens(2, 20)
    full = model(idx)
    cache = KVCache(model.config.n_layers)
    parts = [model(idx[:, :11], kv_cache=cache), model(idx[:, 11:15], kv_cache=cache)]
    parts += [model(idx[:, t : t + 1], kv_cache=cache) for t in range(15, 20)]
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("encoding", ALL_ENCODINGS)
def test_bf16_autocast_gives_float32_logits_close_to_float32(encoding):
    model = tiny(encoding)
    idx = tokens(2, 16)
    ref = model(idx)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = model(idx)
        cached = KVCache(model.config.n_layers)
        model(idx[:, :9], kv_cache=cached)
        step = model(idx[:, 9:12], kv_cache=cached)  # offset + float/bool mask in bf16
    assert low.dtype == torch.float32 and step.dtype == torch.float32
    tol = 0.02 * ref.abs().max().item()  # bf16 keeps ~3 significant digits; measured error ~0.5 %
    torch.testing.assert_close(low, ref, atol=tol, rtol=0)
    torch.testing.assert_close(step, ref[:, 9:12], atol=tol, rtol=0)


@pytest.mark.parametrize("encoding", ALL_ENCODINGS)
def test_learned_encoding_parameters_get_gradients(encoding):
    model = tiny(encoding).train()
    idx = tokens(2, 12)
    F.cross_entropy(model(idx).flatten(0, 1), idx.roll(-1, 1).flatten()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_generate_uses_cache_and_matches_argmax_loop():
    model = tiny("_toy_rotate")
    idx = tokens(2, 4)
    out = model.generate(idx, 6)
    assert out.shape == (2, 10) and torch.equal(out[:, :4], idx)
    ref = idx
    for _ in range(6):
        ref = torch.cat([ref, model(ref)[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(out, ref)
    sampled = model.generate(idx, 3, greedy=False, generator=torch.Generator().manual_seed(0))
    assert sampled.shape == (2, 7)


def test_replace_encoding():
    model = tiny("_toy_rotate")
    idx = tokens(1, 9)
    before = model(idx)
    model.replace_encoding(ToyRotate(n_heads=2, head_dim=8, d_model=16, base=100.0))
    assert model.encoding.base == 100.0
    assert not torch.allclose(model(idx), before)
    with pytest.raises(ValueError, match="head_dim"):
        model.replace_encoding(ToyRotate(n_heads=2, head_dim=4, d_model=8))
    with pytest.raises(ValueError, match="learned parameters"):
        model.replace_encoding(ToyBias(n_heads=2, head_dim=8, d_model=16))


def test_init_and_parameter_count():
    cfg = ModelConfig(vocab_size=50, n_layers=4, n_heads=4, d_model=64, encoding="_toy_rotate")
    torch.manual_seed(0)
    model = ToyTransformer(cfg)
    assert model.head.weight is model.tok_emb.weight  # tied
    d, L, V = 64, 4, 50
    expected = V * d + L * (2 * 2 * d + 4 * d * d + 2 * 4 * d * d) + 2 * d  # emb, LNs, attn, MLP, final LN
    assert model.num_parameters() == expected
    assert model.num_parameters(include_embeddings=False) == expected - V * d
    assert abs(model.blocks[0].attn.qkv.weight.std().item() - 0.02) < 0.002
    assert abs(model.blocks[0].mlp.proj.weight.std().item() - 0.02 / math.sqrt(2 * L)) < 0.002
    untied = ToyTransformer(ModelConfig(vocab_size=50, d_model=64, encoding="_toy_rotate", tie_embeddings=False))
    assert untied.head.weight is not untied.tok_emb.weight


def test_tiny_model_learns_copy():
    """Model + task end to end: a 2-layer width-32 model learns copy (instances up to 5) in seconds."""
    task = make_task("copy", n_symbols=6)
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=task.vocab_size, n_layers=2, n_heads=2, d_model=32, encoding="_toy_rotate")
    model = ToyTransformer(cfg)
    steps = 400
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps, pct_start=0.1)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        batch = task.sample(32, 12, g)
        loss = F.cross_entropy(model(batch.x).flatten(0, 1), batch.y.flatten(), ignore_index=-100)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    model.eval()
    batch = task.sample(256, 12, torch.Generator().manual_seed(123))
    with torch.no_grad():
        pred = model(batch.x).argmax(-1)
    scored = batch.y != -100
    token_acc = (pred[scored] == batch.y[scored]).float().mean().item()
    exact = ((pred == batch.y) | ~scored).all(dim=1).float().mean().item()
    assert token_acc > 0.95 and exact > 0.8, (token_acc, exact)


# -- devices, compile, config ---------------------------------------------------------------------
def test_select_device():
    assert select_device("cpu") == torch.device("cpu")
    assert select_device("auto").type in ("cuda", "mps", "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="'cuda'.*available: .*cpu"):
            select_device("cuda")
        if not torch.backends.mps.is_available():
            assert select_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError, match="'tpu'"):
        select_device("tpu")


def test_maybe_compile_disabled_returns_model():
    model = tiny("_toy_rotate")
    assert maybe_compile(model, False) is model
    with pytest.raises(ValueError, match="enabled"):
        maybe_compile(model, "yes")


def test_config_round_trip_and_validation():
    cfg = ModelConfig(vocab_size=7, n_layers=3, d_model=64, encoding="_toy_rotate", encoding_params={"base": 500.0})
    d = cfg.to_dict()
    assert d["encoding_params"] == {"base": 500.0} and d["n_layers"] == 3
    assert ModelConfig.from_dict(d) == cfg
    assert len({cfg, ModelConfig.from_dict(d)}) == 1  # hashable despite the params dict
    assert cfg.head_dim == 16
    params = {"base": 5.0}
    cfg2 = ModelConfig(vocab_size=7, encoding="_toy_rotate", encoding_params=params)
    params["base"] = 6.0  # mutating the caller's dict does not change the config
    assert cfg2.encoding_params == {"base": 5.0}
    with pytest.raises(Exception):
        cfg.n_layers = 5  # frozen


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"vocab_size": 0}, "vocab_size"),
        ({"vocab_size": 5, "n_layers": 0}, "n_layers"),
        ({"vocab_size": 5, "d_model": 30, "n_heads": 4}, "d_model=30"),
        ({"vocab_size": 5, "dropout": 1.5}, "dropout"),
        ({"vocab_size": 5, "encoding": "no_such_encoding"}, "no_such_encoding"),
        ({"vocab_size": 5, "encoding": "_toy_rotate", "encoding_params": {"bogus": 1}}, "bogus"),
        ({"vocab_size": 5, "encoding": "_toy_rotate", "encoding_params": {"base": object()}}, "JSON"),
    ],
)
def test_bad_config_raises(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        ModelConfig(**kwargs)


def test_bad_forward_input_raises():
    model = tiny("_toy_rotate")
    with pytest.raises(ValueError, match="idx"):
        model(torch.zeros(2, 3))  # float
    with pytest.raises(ValueError, match="idx"):
        model(torch.zeros(3, dtype=torch.long))  # 1-D
    with pytest.raises(ValueError, match="kv_cache"):
        model(tokens(1, 3), kv_cache=KVCache(5))
    with pytest.raises(ValueError, match="ModelConfig"):
        ToyTransformer({"vocab_size": 5})
    with pytest.raises(ValueError, match="unknown ModelConfig"):
        ModelConfig.from_dict({"vocab_size": 5, "colour": "red"})


# -- init width and start token ---------------------------------------------------------------------
def test_width_scaled_init_std_follows_the_fan_in_rule():
    from ropelib.model import GPT2_WIDTH, INIT_STD, width_scaled_init_std

    assert width_scaled_init_std(GPT2_WIDTH) == INIT_STD
    assert width_scaled_init_std(64) == pytest.approx(0.02 * (768 / 64) ** 0.5)
    assert width_scaled_init_std(192) ** 2 * 192 == pytest.approx(INIT_STD**2 * GPT2_WIDTH)  # var x fan_in constant
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="d_model"):
            width_scaled_init_std(bad)


def test_init_std_sets_every_weight_and_residual_projections_are_scaled():
    cfg = ModelConfig(vocab_size=50, d_model=64, n_layers=3, init_std=0.1)
    torch.manual_seed(0)
    m = ToyTransformer(cfg)
    assert float(m.tok_emb.weight.detach().std()) == pytest.approx(0.1, rel=0.05)
    proj = [p for n, p in m.named_parameters() if n.endswith("proj.weight")]
    assert proj and all(float(p.detach().std()) == pytest.approx(0.1 / (2 * 3) ** 0.5, rel=0.1) for p in proj)
    for bad in (0.0, -1.0, float("inf"), True, "0.1"):
        with pytest.raises(ValueError, match="init_std"):
            ModelConfig(vocab_size=50, init_std=bad)


def test_bos_token_id_is_validated_against_the_vocabulary():
    assert ModelConfig(vocab_size=10, bos_token_id=9).bos_token_id == 9
    for bad in (10, -1, 1.0, True):
        with pytest.raises(ValueError, match="bos_token_id"):
            ModelConfig(vocab_size=10, bos_token_id=bad)
    cfg = ModelConfig(vocab_size=10, bos_token_id=3, init_std=0.05)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg


def test_start_windows_replaces_only_the_first_input_and_only_with_a_start_token():
    from ropelib.model import start_windows

    x = torch.arange(12).view(2, 6) % 7 + 2  # (B, T)
    plain = ToyTransformer(ModelConfig(vocab_size=10, d_model=16, n_heads=2))
    assert start_windows(plain, x) is x
    marked = ToyTransformer(ModelConfig(vocab_size=10, d_model=16, n_heads=2, bos_token_id=1))
    out = start_windows(marked, x)
    assert out[:, 0].tolist() == [1, 1] and torch.equal(out[:, 1:], x[:, 1:])
    assert x[:, 0].tolist() != [1, 1]  # the input is not modified in place
    with pytest.raises(ValueError, match="windows"):
        start_windows(marked, torch.zeros(3, dtype=torch.long))


def test_training_and_evaluation_see_the_same_start_token():
    """The loss train() reports on a batch equals the evaluation's loss on the same windows."""
    from ropelib.evaluate import lm_loss_at_lengths
    from ropelib.model import start_windows

    torch.manual_seed(0)
    m = ToyTransformer(ModelConfig(vocab_size=12, d_model=16, n_heads=2, bos_token_id=1)).eval()
    tokens = torch.randint(2, 12, (8 * 8 + 1,))
    res = lm_loss_at_lengths(m, tokens, [8], mode="nonoverlap").iloc[0]
    seq = tokens[: 8 * 8 + 1].unfold(0, 9, 8)  # (8, 9): the non-overlapping windows and their targets
    with torch.no_grad():
        logits = m(start_windows(m, seq[:, :-1]))
    manual = torch.nn.functional.cross_entropy(logits.flatten(0, 1), seq[:, 1:].flatten())
    assert res.loss == pytest.approx(float(manual), rel=1e-6)
    with torch.no_grad():  # without the start token the loss differs: the convention is applied
        other = torch.nn.functional.cross_entropy(m(seq[:, :-1]).flatten(0, 1), seq[:, 1:].flatten())
    assert abs(float(other) - res.loss) > 1e-6


@pytest.mark.parametrize("bad", [13, 40, -1])
def test_token_ids_out_of_range_raise_value_error(bad):
    model = tiny("rope", vocab_size=13)
    idx = tokens(2, 5)
    idx[1, 3] = bad
    with pytest.raises(ValueError, match=rf"token id {bad} is out of range.*vocab_size\) = \[0, 13\)"):
        model(idx)


@pytest.mark.parametrize("heads", [1, 4])
def test_bias_encoding_with_other_head_count_raises_value_error(heads):
    from ropelib.encodings import make_encoding

    model = tiny("alibi")  # n_heads=2
    model.encoding = make_encoding("alibi", n_heads=heads, head_dim=8, d_model=16)  # bypasses replace_encoding
    with pytest.raises(ValueError, match=rf"n_heads={heads}\) but the model's attention has n_heads=2"):
        model(tokens(1, 4))
