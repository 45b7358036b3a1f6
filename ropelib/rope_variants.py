"""RoPE's base and rotary fraction on trained language models, beside the closed-form predictions.

The question (Liu et al. 2023, "Scaling laws of RoPE-based extrapolation", arXiv 2310.05209, §3;
Barbero et al. 2024, "Round and round we go", arXiv 2410.06205, §5): with head dimension ``d``, base
``b`` and training length ``L``, only the pairs whose period ``2 pi b^(2i/d)`` fits inside ``L`` see every
angle in training. Past ``L`` the first pair that did not turn fully meets angles it never saw, and
Liu et al. bound the extrapolation by that pair's period, ``T_extra = 2 pi b^(d_extra/d)``
(``ropelib.analysis.extrapolation_limit``; docs/references.md §4.3). Two ways to move the bound:

* the **base**: a small base makes every pair turn within ``L`` (``T_extra = inf``: no unseen angle); a
  large base slows the pairs, so fewer turn, but the first unseen one has a longer period;
* the **rotary fraction**: GPT-NeoX-style partial rotary (``partial_rotary_factor``: rotate the first
  ``f d`` coordinates with frequencies spread over them, the rest carry no position) and Barbero et
  al.'s p-RoPE (``rope_type = "proportional"``: keep the highest fraction ``p`` of the full spectrum's
  frequencies, zero the rest, so the slow pairs that would meet unseen angles become position-free).

``ROPE_VARIANTS`` is the registry (one record per variant, everything that varies in it). Each variant
is the profile's RoPE language model (``ropelib.base_models.base_spec``) with its ``rope_theta`` /
``rope_type`` / ``partial_rotary_factor`` changed and nothing else; its learning rate is tuned on
validation data by the same sweep as the base models (``tune_variant_lrs``), and every model passes the
RoPE gates of ``ropelib.protocols.gate_models`` before its numbers are used. The ``base_1e4`` variant *is*
the base RoPE model (same spec, same cache entry, same hash).

* ``variant_predictions`` — per variant: the frequencies the model is built with, how many pairs turn
  within ``L``, ``d_extra`` and ``T_extra`` (in tokens and in multiples of ``L``);
* ``variant_specs`` / ``tune_variant_lrs`` / ``train_variants`` / ``gate_variants`` — the runs;
* ``variant_length_grid`` — perplexity at ``m L`` (non-overlapping windows of the test split);
* ``prediction_check`` — does each variant stay flat up to its bound and degrade past it, and do the
  variants rank by their bounds?
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from . import memo
from .analysis import critical_dimension, unseen_angle_limit
from .base_models import BaseSetup, base_spec, run_specs
from .extrapolation import lm_length_grid
from .protocols import SWEEP_SEED, gate_models, lm_task, validation_loss
from .rope import RoPE
from .rope_scaling import RopeConfig
from .runs import RunResult, RunSpec

__all__ = [
    "RopeVariant",
    "ROPE_VARIANTS",
    "variant",
    "variant_predictions",
    "variant_spec",
    "variant_specs",
    "tune_variant_lrs",
    "train_variants",
    "gate_variants",
    "variant_length_grid",
    "prediction_check",
    "PREDICTION_COLUMNS",
]

Cache = Callable[[str, Mapping[str, Any], Callable[[], Any]], Any]
Runs = Mapping[tuple[str, str, int], RunResult]

LIU = "Liu et al. 2023, arXiv 2310.05209, §3 (critical dimension, T_extra)"
NEOX = "Black et al. 2022, GPT-NeoX-20B, arXiv 2204.06745, §2.1 (rotary on 25% of the dimensions)"
BARBERO = "Barbero et al. 2024, arXiv 2410.06205, §5 (p-RoPE: drop the lowest frequencies)"


@dataclass(frozen=True)
class RopeVariant:
    """One RoPE variant: its name, family (``base``, ``partial`` or ``p-rope``), the RoPE keys that differ
    from the base model (``rope_theta``, ``rope_type``, ``partial_rotary_factor``) and its source."""

    name: str
    family: str
    rope_theta: float = 10_000.0
    rope_type: str = "default"
    partial_rotary_factor: float | None = None
    source: str = LIU

    def __post_init__(self) -> None:
        if self.family not in ("base", "partial", "p-rope"):
            raise ValueError(f"family must be 'base', 'partial' or 'p-rope', got {self.family!r}")
        RopeConfig(
            rope_theta=self.rope_theta, rope_type=self.rope_type, partial_rotary_factor=self.partial_rotary_factor
        )  # validates the keys

    @property
    def encoding_params(self) -> dict[str, Any]:
        """The ``rope`` encoding's parameters: only the keys that differ from RoPE's defaults, so that
        ``base_1e4`` has exactly the base model's (empty) parameters and hence its hash."""
        out: dict[str, Any] = {}
        if self.rope_theta != 10_000.0:
            out["rope_theta"] = float(self.rope_theta)
        if self.rope_type != "default":
            out["rope_type"] = self.rope_type
        if self.partial_rotary_factor is not None:
            out["partial_rotary_factor"] = float(self.partial_rotary_factor)
        return out

    def frequencies(self, head_dim: int) -> np.ndarray:
        """The inverse frequencies the model rotates with, float64 ``(rotary_dim // 2,)`` (zeros for the
        frequencies p-RoPE removes), as ``ropelib.rope`` computes them."""
        config = RopeConfig(
            **{
                "rope_theta": self.rope_theta,
                "rope_type": self.rope_type,
                "partial_rotary_factor": self.partial_rotary_factor,
            }
        )
        inv_freq, _ = RoPE(config, head_dim).frequencies()
        return inv_freq.double().numpy()


#: the variants of the sweep, in display order: bases from small to large (1e4 is the base model),
#: then partial rotary and p-RoPE at base 1e4
ROPE_VARIANTS: Mapping[str, RopeVariant] = {
    v.name: v
    for v in (
        RopeVariant("base_10", "base", rope_theta=10.0),
        RopeVariant("base_100", "base", rope_theta=100.0),
        RopeVariant("base_500", "base", rope_theta=500.0),
        RopeVariant("base_1e4", "base", rope_theta=10_000.0),
        RopeVariant("base_1e6", "base", rope_theta=1e6),
        RopeVariant("partial_0.25", "partial", partial_rotary_factor=0.25, source=NEOX),
        RopeVariant("partial_0.5", "partial", partial_rotary_factor=0.5, source=NEOX),
        RopeVariant("p_rope_0.25", "p-rope", rope_type="proportional", partial_rotary_factor=0.25, source=BARBERO),
        RopeVariant("p_rope_0.5", "p-rope", rope_type="proportional", partial_rotary_factor=0.5, source=BARBERO),
    )
}


def variant(name: str) -> RopeVariant:
    """The registered variant ``name`` (ValueError listing the registered names otherwise)."""
    try:
        return ROPE_VARIANTS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown RoPE variant {name!r}; registered: {', '.join(ROPE_VARIANTS)}") from None


def _variants(names: Iterable[str] | None) -> list[RopeVariant]:
    names = list(ROPE_VARIANTS) if names is None else list(names)
    if not names:
        raise ValueError("give at least one RoPE variant")
    return [variant(n) for n in names]


def variant_predictions(names: Iterable[str] | None, head_dim: int, train_length: int) -> pd.DataFrame:
    """One row per variant: ``variant, family, rope_theta, rope_type, partial_rotary_factor, rotated_pairs``
    (pairs with a non-zero frequency), ``turning_pairs`` (of those, pairs whose period fits in ``L``),
    ``slowest_period`` (tokens, of the rotated pairs), ``critical_dimension`` (Liu et al.'s ``d_extra`` for
    the default spectrum; for a partial model over its rotary dimensions; NaN for p-RoPE, whose spectrum
    is not ``b^(-2i/d)`` over any dimension), ``predicted_limit`` (``T_extra`` in tokens, ``inf`` when no
    rotated pair meets an unseen angle) and ``predicted_limit_x`` (``T_extra / L``), ``source``."""
    L = int(train_length)
    rows = []
    for v in _variants(names):
        theta = v.frequencies(head_dim)
        rotated = theta[theta > 0]
        periods = 2.0 * math.pi / rotated
        if v.rope_type == "proportional":
            dx = math.nan
        else:
            rd = RopeConfig(rope_theta=v.rope_theta, partial_rotary_factor=v.partial_rotary_factor).rotary_dim(head_dim)
            dx = critical_dimension(rd, v.rope_theta, L)
        limit = unseen_angle_limit(theta, L)
        rows.append(
            {
                "variant": v.name,
                "family": v.family,
                "rope_theta": v.rope_theta,
                "rope_type": v.rope_type,
                "partial_rotary_factor": v.partial_rotary_factor,
                "rotated_pairs": int(rotated.size),
                "turning_pairs": int((periods <= L).sum()),
                "slowest_period": float(periods.max()),
                "critical_dimension": dx,
                "predicted_limit": limit,
                "predicted_limit_x": limit / L,
                "source": v.source,
            }
        )
    return pd.DataFrame(rows)


def variant_spec(
    setup: BaseSetup, name: str, seed: int, device: str = "auto", *, lr: float | None = None, steps: int | None = None
) -> RunSpec:
    """The profile's RoPE language model (``base_spec(setup, "rope", lm_task(setup), ...)``) with the
    variant's RoPE keys; everything else (size, data, budget, start token) as the base model's."""
    v = variant(name)
    if "rope" not in setup.encodings:
        raise ValueError(f"the setup has no 'rope' encoding to vary; its encodings: {', '.join(setup.encodings)}")
    spec = base_spec(setup, "rope", lm_task(setup), seed, device, lr=lr, steps=steps)
    model = dataclasses.replace(spec.model, encoding_params=v.encoding_params)
    return dataclasses.replace(spec, model=model)


def variant_specs(
    setup: BaseSetup,
    names: Iterable[str] | None = None,
    *,
    seeds: Iterable[int] | None = None,
    lrs: Mapping[str, float] | None = None,
    device: str = "auto",
) -> dict[tuple[str, str, int], RunSpec]:
    """Specs keyed ``(variant, task, seed)`` for every variant and seed (default: the setup's seeds);
    ``lrs`` maps a variant to its learning rate (default: the setup's ``lr``)."""
    task = lm_task(setup)
    seeds = list(setup.seeds if seeds is None else seeds)
    lrs = dict(lrs or {})
    return {
        (v.name, task, s): variant_spec(setup, v.name, s, device, lr=lrs.get(v.name))
        for v in _variants(names)
        for s in seeds
    }


def tune_variant_lrs(
    setup: BaseSetup,
    names: Iterable[str] | None = None,
    *,
    device: str = "auto",
    jobs: int = 1,
    cached: Cache = memo.cached,
) -> tuple[dict[str, float], pd.DataFrame]:
    """The base models' learning-rate sweep run for each variant: seed ``SWEEP_SEED`` at every rate of the
    LM task's ``lrs`` for ``sweep_steps`` steps, scored by ``protocols.validation_loss`` on the validation
    split; the lowest loss wins (ties: the smaller rate). ``base_1e4``'s sweep runs are the base RoPE
    model's. Returns ``({variant: lr}, table)``, the table with ``variant, lr, steps, run_hash, val_loss,
    chosen``. A task without a grid gives every variant the setup's ``lr``."""
    ts = setup.task(lm_task(setup))
    variants = _variants(names)
    if not ts.lrs:
        return {v.name: setup.lr for v in variants}, pd.DataFrame(
            columns=["variant", "lr", "steps", "run_hash", "val_loss", "chosen"]
        )
    steps = ts.sweep_steps or ts.steps
    keyed = {
        (v.name, ts.name, i): variant_spec(setup, v.name, SWEEP_SEED, device, lr=lr, steps=steps)
        for v in variants
        for i, lr in enumerate(ts.lrs)
    }
    runs = run_specs(keyed, jobs=jobs)
    rows = [
        {
            "variant": k[0],
            "lr": r.spec.train.lr,
            "steps": r.spec.train.steps,
            "run_hash": r.hash[:16],
            "val_loss": validation_loss(r, max_tokens=setup.lm_eval_tokens, cached=cached),
        }
        for k, r in runs.items()
    ]
    table = pd.DataFrame(rows)
    v = table.val_loss.where(np.isfinite(table.val_loss), math.inf)
    best = table.assign(v=v).sort_values(["v", "lr"]).groupby("variant", sort=False).head(1)
    lrs = {r.variant: float(r.lr) for r in best.itertuples()}
    table["chosen"] = [lrs[r.variant] == r.lr for r in table.itertuples()]
    return lrs, table


def train_variants(
    setup: BaseSetup,
    names: Iterable[str] | None = None,
    *,
    lrs: Mapping[str, float] | None = None,
    seeds: Iterable[int] | None = None,
    device: str = "auto",
    jobs: int = 1,
) -> dict[tuple[str, str, int], RunResult]:
    """Train (or read back) every variant x seed at its learning rate; results keyed ``(variant, task, seed)``."""
    return run_specs(variant_specs(setup, names, seeds=seeds, lrs=lrs, device=device), jobs=jobs)


def gate_variants(runs: Runs, setup: BaseSetup, *, cached: Cache = memo.cached) -> pd.DataFrame:
    """``protocols.gate_models`` for each variant's models, judged as the ``rope`` encoding is (the RoPE
    n-gram bar of ``setup.gates``; the context gain averaged over the variant's seeds): the gate table
    with ``encoding`` replaced by ``variant``."""
    tables = []
    for name in dict.fromkeys(k[0] for k in runs):
        mine = {("rope", t, s): r for (v, t, s), r in runs.items() if v == name}
        tables.append(
            gate_models(mine, setup, cached=cached).assign(encoding=name).rename(columns={"encoding": "variant"})
        )
    if not tables:
        raise ValueError("no runs to gate")
    return pd.concat(tables, ignore_index=True)


def variant_length_grid(
    runs: Runs,
    setup: BaseSetup,
    passed: set[tuple[str, str, int]],
    multipliers: Sequence[float],
    *,
    device: str = "cpu",
    cached: Cache = memo.cached,
) -> pd.DataFrame:
    """Loss and perplexity of every variant's model at ``round(m L)`` on the test split, non-overlapping
    windows (``extrapolation.lm_length_grid``, the same evaluation as notebook 05; ``passed`` holds
    ``(variant, task, seed)`` keys); ``encoding`` renamed ``variant``."""
    grid = lm_length_grid(runs, setup, passed, multipliers, modes=("nonoverlap",), device=device, cached=cached)
    return grid.rename(columns={"encoding": "variant"})


#: columns of ``prediction_check``
PREDICTION_COLUMNS = [
    "variant",
    "family",
    "predicted_limit_x",
    "n_seeds",
    "ppl_1x",
    "flat_until_x",
    "first_worse_x",
    "ppl_ratio_max",
    "consistent",
    "note",
]


def prediction_check(summary: pd.DataFrame, predictions: pd.DataFrame, *, tolerance: float = 0.05) -> pd.DataFrame:
    """Per variant, whether its measured perplexity curve agrees with its predicted bound ``T_extra``.

    ``summary``: seed means per ``(variant, multiplier)`` with ``ppl_mean`` and ``n_seeds`` (passing
    models only; ``extrapolation.summarise_lm`` of ``variant_length_grid`` with ``encoding`` renamed).
    A length counts as *worse* when its mean perplexity exceeds ``(1 + tolerance)`` times the 1x value.
    ``flat_until_x``: the largest multiplier up to which no length is worse; ``first_worse_x``: the first
    worse multiplier (NaN if none). ``consistent`` is True when every evaluated multiplier at or below
    the predicted bound is not worse *and* (if the bound is finite and a multiplier past it was evaluated)
    some multiplier past it is worse; NaN with a ``note`` when no model of the variant passed its gate."""
    if not 0 <= tolerance < 1:
        raise ValueError(f"tolerance must be in [0, 1), got {tolerance!r}")
    rows = []
    pred = predictions.set_index("variant")
    for name, grp in summary.groupby("variant", sort=False):
        grp = grp.sort_values("multiplier")
        limit = float(pred.loc[name, "predicted_limit_x"]) if name in pred.index else math.nan
        row = {
            "variant": name,
            "family": pred.loc[name, "family"] if name in pred.index else None,
            "predicted_limit_x": limit,
            "n_seeds": int(grp.n_seeds.min()),
        }
        base = grp[np.isclose(grp.multiplier, 1.0)]
        if not len(base) or not np.isfinite(base.ppl_mean.iloc[0]) or grp.n_seeds.min() == 0:
            rows.append(
                {
                    **row,
                    "ppl_1x": math.nan,
                    "flat_until_x": math.nan,
                    "first_worse_x": math.nan,
                    "ppl_ratio_max": math.nan,
                    "consistent": np.nan,
                    "note": "no model passed its gate",
                }
            )
            continue
        p1 = float(base.ppl_mean.iloc[0])
        ratio = grp.ppl_mean.to_numpy() / p1
        m = grp.multiplier.to_numpy()
        worse = ratio > 1 + tolerance
        first = float(m[worse][0]) if worse.any() else math.nan
        flat = float(m[: np.argmax(worse)][-1]) if worse.any() else float(m[-1])
        before_ok = not worse[m <= limit + 1e-9].any()
        after = m > limit + 1e-9
        after_ok = (not np.isfinite(limit)) or (not after.any()) or bool(worse[after].any())
        note = []
        if not before_ok:
            note.append(
                f"worse from {first:g}x, before its bound {limit:.2f}x"
                if np.isfinite(limit)
                else f"no bound predicted, yet worse from {first:g}x"
            )
        if np.isfinite(limit) and after.any() and not worse[after].any():
            note.append(f"never worse past its bound {limit:.2f}x (to {m[-1]:g}x)")
        rows.append(
            {
                **row,
                "ppl_1x": p1,
                "flat_until_x": flat,
                "first_worse_x": first,
                "ppl_ratio_max": float(ratio.max()),
                "consistent": bool(before_ok and after_ok),
                "note": "; ".join(note),
            }
        )
    return pd.DataFrame(rows, columns=PREDICTION_COLUMNS)
