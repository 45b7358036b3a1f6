"""The results tables of notebooks 04–07: their schema, and the one way to write and read them.

Every table is a tidy CSV file ``results/<name>.csv`` (``ropelib.paths.results_dir()``), one row per
observation, with the producing profile as its first column (``results/README.md`` documents every
column). ``SCHEMA`` maps each file name to its ordered column list; ``write_table`` inserts the
profile, checks the columns against the schema and writes the file atomically
(``ropelib.paths.atomic_write_text``); ``read_table`` reads one back, checks its columns and picks one
profile's rows.

Table names may be given with or without the ``.csv`` suffix (``"04_runs"`` or ``"04_runs.csv"``).

One table has columns that depend on the profile: ``04_gates.csv`` ends with three columns per gate
check that occurred (``gate_<check>_value``, ``gate_<check>_threshold``, ``gate_<check>_passed``,
``ropelib.gates.gate_table``), and which checks occur depends on the profile's gate thresholds (e.g.
``ppl_below_1gram`` in ``smoke``, ``ppl_below_3gram`` in ``default``, also ``ppl_below_4gram`` for
RoPE in ``full``). ``SCHEMA`` holds its fixed columns; ``VARIABLE_COLUMNS`` the pattern of the
trailing ones.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd

from .paths import atomic_write_text, results_dir

__all__ = [
    "SCHEMA",
    "VARIABLE_COLUMNS",
    "TABLE_NOTEBOOK",
    "table_name",
    "columns",
    "check_columns",
    "table_path",
    "write_table",
    "read_table",
]


def _cols(text: str) -> tuple[str, ...]:
    return tuple(c.strip() for c in text.split(",") if c.strip())


#: results file -> its ordered columns (``profile`` first). For ``04_gates.csv`` the fixed columns only;
#: see ``VARIABLE_COLUMNS``.
SCHEMA: Mapping[str, tuple[str, ...]] = {
    # notebook 04 — training, learning-rate sweep, gates
    "04_settings.csv": _cols("profile, encoding, parameter, value, rule, source, task, train_length"),
    "04_lr_sweep.csv": _cols("profile, encoding, task, lr, steps, run_hash, val_loss, chosen"),
    "04_runs.csv": _cols(
        "profile, encoding, task, seed, run_hash, train_length, steps, batch_size, lr, tokens, d_model, n_layers, "
        "n_heads, num_parameters, final_train_loss, train_time_s, tokens_per_s, device, cached"
    ),
    "04_training_curves.csv": _cols("profile, encoding, task, seed, step, loss, val_loss"),
    "04_ngram.csv": _cols("profile, order, cross_entropy, perplexity, n_train_tokens, n_eval_tokens, task, split"),
    "04_gates.csv": _cols(
        "profile, encoding, task, seed, kind, run_hash, loss, ppl, context_gain, context_gain_per_seed, n_tokens, "
        "ngram_ppl_1, ngram_ppl_2, "
        "ngram_ppl_3, ngram_ppl_4, ngram_ppl_5, correct, n, accuracy, floor, passed, reason"
    ),
    "04_in_distribution.csv": _cols("profile, encoding, task, seed, metric, value, passed_gate"),
    "04_summary.csv": _cols("profile, encoding, task, metric, n_seeds, mean, ci_low, ci_high, n_passed"),
    "04_sinusoid_scale.csv": _cols(
        "profile, encoding, scale, seed, run_hash, train_length, length, multiplier, loss, ppl, position_norm, "
        "token_norm_trained"
    ),
    "04_throughput.csv": _cols("profile, encoding, task, seq_len, batch_size, round, tokens_per_s"),
    "04_attention_distance.csv": _cols("profile, encoding, task, seed, layer, head, mean_distance"),
    # notebook 05 — length extrapolation
    "05_lm_loss.csv": _cols(
        "profile, encoding, task, seed, run_hash, passed_gate, train_length, length, multiplier, mode, stride, loss, "
        "ppl, n_tokens, n_windows, min_context, status, reason"
    ),
    "05_lm_summary.csv": _cols(
        "profile, encoding, train_length, length, multiplier, mode, n_seeds, loss_mean, loss_ci_low, loss_ci_high, "
        "ppl_mean, ppl_ci_low, ppl_ci_high, n_failed"
    ),
    "05_without_positions.csv": _cols(
        "profile, encoding, task, kind, seed, run_hash, passed_gate, train_length, length, metric, as_trained, "
        "without_positions"
    ),
    "05_loss_by_position.csv": _cols("profile, encoding, seed, passed_gate, length, position_lo, position_hi, loss"),
    "05_retrieval.csv": _cols(
        "profile, encoding, task, seed, run_hash, passed_gate, train_length, length, multiplier, depth, distance, "
        "accuracy, token_accuracy, n_correct, n_samples, floor, status, reason"
    ),
    "05_algorithmic.csv": _cols(
        "profile, encoding, task, seed, run_hash, passed_gate, train_length, length, multiplier, n, accuracy, "
        "token_accuracy, n_correct, n_samples, status, reason"
    ),
    "05_accuracy_summary.csv": _cols(
        "profile, encoding, task, train_length, length, multiplier, n_seeds, mean, ci_low, ci_high, method, "
        "n_failed, floor"
    ),
    "05_orderings.csv": _cols(
        "profile, source, comparison, better, worse, multiplier, metric, better_value, worse_value, "
        "published_better, published_worse, reproduced, note"
    ),
    # notebook 06 — context extension of the RoPE models
    "06_methods.csv": _cols(
        "profile, task, method, protocol, factor, train_length, head_dim, rope_theta, rope_keys, attention_factor, "
        "pairs_unchanged, pairs_interpolated, min_pair_factor, max_pair_factor"
    ),
    "06_zero_shot_ppl.csv": _cols(
        "profile, task, seed, run_hash, method, factor, train_length, length, multiplier, loss, ppl, n_tokens, "
        "passed_gate"
    ),
    "06_loss_by_position.csv": _cols(
        "profile, task, seed, method, factor, train_length, length, position_lo, position_hi, loss, passed_gate"
    ),
    "06_zero_shot_retrieval.csv": _cols(
        "profile, task, seed, run_hash, method, factor, train_length, length, multiplier, depth, accuracy, "
        "token_accuracy, n_samples, n_correct, passed_gate"
    ),
    "06_finetune.csv": _cols(
        "profile, task, seed, method, factor, ft_steps, ft_budget, ft_tokens, ft_fraction, run_hash, train_length, "
        "ft_length, length, multiplier, metric, value, passed_gate"
    ),
    "06_finetune_lr.csv": _cols(
        "profile, task, seed, method, ft_budget, ft_steps, lr_ratio, lr, metric, value, chosen"
    ),
    "06_longrope_search.csv": _cols(
        "profile, task, seed, run_hash, factor, train_length, lo, hi, loss, ppl, chosen, passed_gate"
    ),
    "06_yarn_temperature.csv": _cols(
        "profile, task, seed, run_hash, factor, coefficient, attention_factor, train_length, length, multiplier, loss, "
        "ppl, n_tokens, passed_gate"
    ),
    # notebook 08 — RoPE's base and rotary fraction, attention past L
    "08_predictions.csv": _cols(
        "profile, variant, family, rope_theta, rope_type, partial_rotary_factor, rotated_pairs, turning_pairs, "
        "slowest_period, critical_dimension, predicted_limit, predicted_limit_x, source, train_length, head_dim"
    ),
    "08_lr_sweep.csv": _cols("profile, variant, lr, steps, run_hash, val_loss, chosen"),
    "08_gates.csv": _cols(
        "profile, variant, task, seed, run_hash, ppl, context_gain, context_gain_per_seed, ngram_ppl_3, ngram_ppl_4, "
        "passed, reason"
    ),
    "08_lm_loss.csv": _cols(
        "profile, variant, task, seed, run_hash, passed_gate, train_length, length, multiplier, mode, stride, loss, "
        "ppl, n_tokens, n_windows, min_context, status, reason"
    ),
    "08_lm_summary.csv": _cols(
        "profile, variant, train_length, length, multiplier, mode, n_seeds, loss_mean, loss_ci_low, loss_ci_high, "
        "ppl_mean, ppl_ci_low, ppl_ci_high, n_failed"
    ),
    "08_prediction_check.csv": _cols(
        "profile, variant, family, predicted_limit_x, n_seeds, ppl_1x, flat_until_x, first_worse_x, ppl_ratio_max, "
        "consistent, note"
    ),
    "08_attention_profile.csv": _cols(
        "profile, encoding, task, seed, multiplier, length, layer, head, n_queries, entropy, uniform_entropy, "
        "entropy_ratio, far_mass, mean_distance, passed_gate"
    ),
    "08_needle_attention.csv": _cols(
        "profile, encoding, task, seed, multiplier, length, layer, head, n_samples, needle_mass, needle_share, "
        "mean_needle_distance, accuracy, depth, passed_gate"
    ),
    "08_rope_bands.csv": _cols(
        "profile, encoding, task, seed, multiplier, length, layer, head, band, keys, n_pairs, mean, spread, passed_gate"
    ),
    "08_length_gates.csv": _cols(
        "profile, encoding, task, seed, train_length, run_hash, ppl, context_gain, context_gain_per_seed, ngram_ppl_3, "
        "ngram_ppl_4, passed, reason"
    ),
    "08_length_loss.csv": _cols(
        "profile, encoding, task, seed, run_hash, passed_gate, train_length, length, multiplier, mode, stride, loss, "
        "ppl, n_tokens, n_windows, min_context, status, reason"
    ),
    "08_length_collapse.csv": _cols("profile, encoding, multiplier, train_length, n_seeds, ratio, n_lengths, spread"),
    # notebook 07 — the claims audit
    "07_claims.csv": _cols(
        "profile, claim_id, claim, section, category, verdict, summary, evidence_json, figures, literature"
    ),
}

#: tables whose fixed columns are followed by profile-dependent ones: file -> pattern of each trailing
#: column (group ``check``: the gate check, ``part``: value / threshold / passed). Every check must
#: have all three parts, in that order.
VARIABLE_COLUMNS: Mapping[str, re.Pattern[str]] = {
    "04_gates.csv": re.compile(r"^gate_(?P<check>[a-z0-9_]+?)_(?P<part>value|threshold|passed)$"),
}
_PARTS = ("value", "threshold", "passed")

#: results file -> the notebook that writes it
TABLE_NOTEBOOK: Mapping[str, str] = {name: name[:2] for name in SCHEMA}


def table_name(name: str) -> str:
    """The file name of a table (``"04_runs"`` -> ``"04_runs.csv"``); ValueError for an unknown table."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"table name must be a non-empty string, got {name!r}")
    base = os.path.basename(name)
    if base != name:
        raise ValueError(f"table name must be a file name without folders, got {name!r}")
    file = name if name.endswith(".csv") else f"{name}.csv"
    if file not in SCHEMA:
        raise ValueError(f"unknown results table {name!r}; known: {', '.join(SCHEMA)}")
    return file


def columns(name: str) -> tuple[str, ...]:
    """The fixed ordered columns of a table (``SCHEMA``)."""
    return SCHEMA[table_name(name)]


def _variable_problems(file: str, extra: list[str]) -> list[str]:
    """What is wrong with the trailing profile-dependent columns of ``file`` (``[]``: nothing)."""
    pattern = VARIABLE_COLUMNS[file]
    bad = [c for c in extra if not pattern.match(c)]
    if bad:
        return [f"unexpected column(s) {bad} (the trailing columns must match {pattern.pattern!r})"]
    if len(extra) % 3:
        return [f"trailing gate columns {extra} do not come in (value, threshold, passed) triples"]
    problems = []
    for i in range(0, len(extra), 3):
        triple = extra[i : i + 3]
        parts = [pattern.match(c) for c in triple]
        checks = {m["check"] for m in parts}
        if len(checks) != 1 or tuple(m["part"] for m in parts) != _PARTS:
            problems.append(f"columns {triple} are not one check's gate_<check>_value, _threshold, _passed")
    return problems


def check_columns(cols: Iterable[str], name: str) -> None:
    """ValueError unless ``cols`` (in order) are the schema's columns of table ``name`` (plus, for a table
    of ``VARIABLE_COLUMNS``, its trailing profile-dependent columns); the message names the table and
    the missing, extra or misordered columns."""
    file = table_name(name)
    got = [str(c) for c in cols]
    want = list(SCHEMA[file])
    dup = sorted({c for c in got if got.count(c) > 1})
    if dup:
        raise ValueError(f"{file}: duplicate column(s) {dup}")
    fixed, extra = got[: len(want)], got[len(want) :]
    missing = [c for c in want if c not in got]
    if file in VARIABLE_COLUMNS:
        unexpected = [c for c in got if c not in want and not VARIABLE_COLUMNS[file].match(c)]
    else:
        unexpected = [c for c in got if c not in want]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing column(s) {missing}")
        if unexpected:
            parts.append(f"extra column(s) {unexpected}")
        raise ValueError(
            f"{file} does not match its schema (ropelib.results.SCHEMA): {'; '.join(parts)}; "
            f"expected columns {want}, got {got}"
        )
    if fixed != want:
        raise ValueError(
            f"{file}: columns in the wrong order; expected {want}"
            f"{' then gate_<check>_{value,threshold,passed} columns' if file in VARIABLE_COLUMNS else ''}"
            f", got {got}"
        )
    if extra:
        if file not in VARIABLE_COLUMNS:  # unreachable: extras were reported above
            raise ValueError(f"{file}: extra column(s) {extra}")
        problems = _variable_problems(file, extra)
        if problems:
            raise ValueError(f"{file} does not match its schema: {'; '.join(problems)}")


def table_path(name: str, directory: str | os.PathLike | None = None) -> Path:
    """``<directory or ropelib.paths.results_dir()>/<file>`` of table ``name``."""
    folder = Path(directory) if directory is not None else results_dir()
    return folder / table_name(name)


def write_table(df: pd.DataFrame, name: str, profile: str, directory: str | os.PathLike | None = None) -> Path:
    """Write ``df`` as results table ``name`` with ``profile`` as its first column; return the path.

    ``df`` holds the schema's columns without ``profile`` (a ``profile`` column already equal to
    ``profile`` everywhere is accepted and moved first). The columns must equal ``SCHEMA[name]`` in
    order (ValueError naming the table and the missing / extra columns otherwise); the file is written
    atomically (``ropelib.paths.atomic_write_text``, ``DataFrame.to_csv(index=False)``) into
    ``directory`` (default ``ropelib.paths.results_dir()``).
    """
    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"df must be a pandas DataFrame, got {type(df).__name__}")
    if not isinstance(profile, str) or not profile.strip():
        raise ValueError(f"profile must be a non-empty string, got {profile!r}")
    file = table_name(name)
    out = df.copy()
    if "profile" in out.columns:
        values = set(out["profile"].astype(str))
        if values - {profile}:
            raise ValueError(f"{file}: df already has a profile column with {sorted(values)}, not only {profile!r}")
        out = out.drop(columns="profile")
    out.insert(0, "profile", profile)
    check_columns(out.columns, file)
    path = table_path(file, directory)
    atomic_write_text(path, out.to_csv(index=False))
    return path


def read_table(name: str, directory: str | os.PathLike | None = None, profile: str | None = None) -> pd.DataFrame:
    """Results table ``name`` as a DataFrame (its ``profile`` column included).

    ``directory`` defaults to ``ropelib.paths.results_dir()``. FileNotFoundError (naming the notebook to
    run) when the file is missing; ValueError when its columns differ from the schema (a table written
    before the schema changed: rerun its notebook). ``profile``: keep that profile's rows; required when
    the table holds several profiles, and a table whose rows are all of other profiles is a ValueError.
    """
    file = table_name(name)
    path = table_path(file, directory)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run notebook {TABLE_NOTEBOOK[file]}")
    table = pd.read_csv(path)
    try:
        check_columns(table.columns, file)
    except ValueError as e:
        raise ValueError(f"{path}: {e} (stale: rerun notebook {TABLE_NOTEBOOK[file]})") from None
    profiles = sorted(map(str, table["profile"].dropna().unique()))
    if profile is None:
        if len(profiles) > 1:
            raise ValueError(f"{file} holds profiles {profiles}; choose one with profile=")
        return table
    if profiles and profile not in profiles:
        raise ValueError(f"{file} holds profiles {profiles}, not {profile!r}")
    return table[table["profile"].astype(str) == profile].reset_index(drop=True) if len(profiles) > 1 else table
