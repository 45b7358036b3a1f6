"""``profiles.yaml`` and the checks of its parameters against each notebook's ``parameters`` cell.

``profiles.yaml`` has two keys: ``profiles`` (the names) and ``notebooks`` (per notebook, per profile, the
parameters papermill injects); its header comment describes the format. A notebook section may not set
``profile`` or ``device``, which the pipeline injects into every notebook (``INJECTED``), or name an
unknown profile. Every parameter is checked against the notebook's ``parameters`` cell before anything
executes: a name must be defined there (``check_parameters``), and a value must have the type of its
default there, within the ranges of ``PARAMETER_RANGES`` (``check_profile_values``). A YAML syntax error, a
key repeated in one mapping, a bad layout or a bad value is a one-line ``ConfigError`` (exit code 2).
"""

from __future__ import annotations

import ast
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
import yaml

from .notebook_files import discover_notebooks, effective_input, parameters_cell
from .run_messages import ConfigError, shown

#: parameters the pipeline injects into every notebook (a notebook's parameters cell must define them)
INJECTED = ("profile", "device")


@dataclass(frozen=True)
class Profiles:
    """The contents of ``profiles.yaml``: profile names and ``{notebook: {profile: {param: value}}}``."""

    names: tuple[str, ...]
    notebooks: Mapping[str, Mapping[str, Mapping[str, Any]]]

    def parameters(self, notebook: str, profile: str) -> dict[str, Any]:
        """The parameters ``profiles.yaml`` sets for ``notebook`` under ``profile`` (without profile/device)."""
        if profile not in self.names:
            raise ConfigError(f"unknown profile {profile!r}; profiles in profiles.yaml: {', '.join(self.names)}")
        return dict(self.notebooks.get(notebook, {}).get(profile) or {})


class UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that rejects a key repeated within one mapping (PyYAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor` may be overridden on purpose
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                seen = key in first_line
            except TypeError:  # an unhashable key: the base class reports it
                continue
            if seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first at line {first_line[key] + 1})", key_node.start_mark
                )
            first_line[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def _yaml_error(path: Path, exc: yaml.YAMLError) -> ConfigError:
    """One line: ``file:line:column: <PyYAML's problem> (<its context>, line n)``."""
    mark = getattr(exc, "problem_mark", None)
    where = f"{shown(path)}:{mark.line + 1}:{mark.column + 1}" if mark is not None else shown(path)
    problem = getattr(exc, "problem", None) or str(exc)
    context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if context:
        problem += f" ({context}" + (f" at line {context_mark.line + 1})" if context_mark is not None else ")")
    return ConfigError(f"{where}: invalid YAML: {' '.join(problem.split())}")


def load_profiles(path: Path, notebooks_dir: Path | None = None) -> Profiles:
    """Read and validate ``profiles.yaml`` (format in its header comment).

    Rejected with a one-line ``ConfigError`` (exit code 2 in ``main``): a YAML syntax error (with file, line
    and column), a key repeated in one mapping, a bad layout. With ``notebooks_dir``, every value is also
    checked against the notebook's parameters cell (``check_profile_values``), so that a bad value stops the
    run before any notebook starts rather than inside a notebook after its models have trained.
    """
    try:
        raw = yaml.load(Path(path).read_text(encoding="utf-8"), Loader=UniqueKeyLoader) or {}
    except FileNotFoundError:
        raise ConfigError(f"profiles file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{shown(path)}: cannot read: {exc}") from None
    except yaml.YAMLError as exc:
        raise _yaml_error(path, exc) from None
    path = shown(path)
    if not isinstance(raw, dict) or set(raw) - {"profiles", "notebooks"}:
        got = sorted(map(str, raw)) if isinstance(raw, dict) else f"a {type(raw).__name__}"
        raise ConfigError(f"{path}: top-level keys must be 'profiles' and 'notebooks', got {got}")
    names = raw.get("profiles")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"{path}: 'profiles' must be a non-empty list of names, got {names!r}")
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: 'profiles' lists a name twice: {names!r}")
    sections = raw.get("notebooks") or {}
    if not isinstance(sections, dict):
        raise ConfigError(f"{path}: 'notebooks' must map notebook names to profile sections")
    notebooks: dict[str, dict[str, dict[str, Any]]] = {}
    for nb_name, section in sections.items():
        section = section or {}
        if not isinstance(section, dict):
            raise ConfigError(f"{path}: notebooks.{nb_name} must map profile names to parameters")
        unknown = sorted(map(str, set(section) - set(names)))
        if unknown:
            raise ConfigError(
                f"{path}: notebooks.{nb_name} has unknown profile(s) {', '.join(map(repr, unknown))}; "
                f"profiles: {', '.join(names)}"
            )
        for prof, params in section.items():
            if params is not None and not isinstance(params, dict):
                raise ConfigError(f"{path}: notebooks.{nb_name}.{prof} must be a mapping of parameters, got {params!r}")
            reserved = sorted(set(params or {}) & set(INJECTED))
            if reserved:
                raise ConfigError(
                    f"{path}: notebooks.{nb_name}.{prof} sets {', '.join(reserved)}, which run_all injects itself"
                )
        notebooks[str(nb_name)] = {p: dict(v or {}) for p, v in section.items()}
    profiles = Profiles(tuple(names), notebooks)
    if notebooks_dir is not None:
        check_profile_values(profiles, Path(notebooks_dir), path)
    return profiles


# Value checks. The type of a parameter is that of its default in the notebook's parameters cell; the ranges
# below are what a default cannot say. A name means the same thing in every notebook that has it.
POSITIVE = "positive"
PROBABILITY = "probability"
PARAMETER_RANGES: dict[str, str] = {
    **dict.fromkeys(
        [  # sizes, counts, lengths, steps, threads, factors (lists: each item)
            "steps",
            "batch_size",
            "seq_len",
            "d_model",
            "n_layers",
            "n_heads",
            "head_dim",
            "eval_multiples",
            "eval_windows",
            "length",
            "original_length",
            "scaling_factor",
            "dynamic_lengths",
            "max_symbolic_dim",
            "head_dims",
            "bases",
            "r_max_fig2",
            "r_max_far",
            "n_random",
            "mc_head_dim",
            "train_steps",
            "train_seq_len",
            "train_batch_size",
            "extension_factor",
            "toy_head_dim",
            "toy_base",
            "toy_length",
            "toy_factor",
            "reference_factor",
            "dynamic_multiples",
            "jobs",
            "cpu_threads",
            "curve_every",
            "smooth_steps",
            "eval_threads",
            "attention_samples",
            "bench_rounds",
            "bench_steps",
            "sinusoid_scales",
            "multipliers",
            "eval_tokens",
            "position_windows",
            "position_bins",
            "retrieval_samples",
            "algorithmic_samples",
            "factors",
            "finetune_factor",
            "finetune_steps",
            "finetune_batch_size",
            "finetune_lr",
            "threads",
            "score_length",
            "check_head_dim",
            "attention_multipliers",
            "attention_windows",
            "band_windows",
            "needle_samples",
        ],
        POSITIVE,
    ),  # fmt: skip
    **dict.fromkeys(
        [
            "sliding_stride_fraction",
            "retrieval_depths",
            "quality_tolerance",
            "retention_fraction",
            "min_learned_accuracy",
            "tolerance",
        ],
        PROBABILITY,
    ),  # fmt: skip
}
#: parameters whose notebook documents ``None`` as a meaningful value besides its default's type
NULLABLE = frozenset({"threads", "seeds"})

_NOUNS: dict[type, tuple[str, str]] = {
    bool: ("a boolean", "booleans"),
    int: ("an integer", "integers"),
    float: ("a number", "numbers"),
    str: ("a string", "strings"),
    dict: ("a mapping", "mappings"),
}


@dataclass(frozen=True)
class Expected:
    """What a profile may set one parameter to (``expected_value``): its type, a range, list or not."""

    kind: type | None  # bool, int, float (int accepted), str, dict; None: anything
    is_list: bool = False
    non_empty: bool = False  # lists: at least one item (the default has one)
    rule: str | None = None  # POSITIVE (> 0) or PROBABILITY (in [0, 1]); numbers only
    nullable: bool = False

    def describe(self) -> str:
        """E.g. ``a positive integer``, ``a non-empty list of numbers in [0, 1]``."""
        singular, plural = _NOUNS.get(self.kind, ("anything", "values"))
        numeric = self.kind in (int, float)
        if numeric and self.rule == POSITIVE:
            singular, plural = f"a positive {singular.split(' ', 1)[1]}", f"positive {plural}"
        elif numeric and self.rule == PROBABILITY:
            singular, plural = f"{singular} in [0, 1]", f"{plural} in [0, 1]"
        text = f"a {'non-empty ' if self.non_empty else ''}list of {plural}" if self.is_list else singular
        return text + (" or null" if self.nullable else "")

    def accepts(self, value: Any) -> bool:
        if value is None:
            return self.nullable or (self.kind is None and not self.is_list)
        if not self.is_list:
            return self._item_ok(value)
        return isinstance(value, list) and (bool(value) or not self.non_empty) and all(map(self._item_ok, value))

    def _item_ok(self, value: Any) -> bool:
        if self.kind is None:
            return True
        if self.kind in (int, float):
            allowed = int if self.kind is int else (int, float)
            if isinstance(value, bool) or not isinstance(value, allowed) or not float("-inf") < value < float("inf"):
                return False
            return {POSITIVE: value > 0, PROBABILITY: 0 <= value <= 1}.get(self.rule, True)
        return isinstance(value, self.kind)


def expected_value(name: str, default: Any) -> Expected:
    """``Expected`` of parameter ``name`` from its notebook default and ``PARAMETER_RANGES`` / ``NULLABLE``.

    A float default accepts an integer; a list default gives a list whose items have the type of the default's
    items (ints and floats mixed: numbers; other mixtures or an empty default: anything), non-empty when the
    default is; a ``None`` default accepts anything.
    """
    rule, nullable = PARAMETER_RANGES.get(name), name in NULLABLE

    def kind_of(values: Sequence[Any]) -> type | None:
        kinds = {type(v) for v in values}
        if kinds == {int, float}:
            return float
        kind = kinds.pop() if len(kinds) == 1 else None
        return kind if kind in _NOUNS else None

    if default is None:
        return Expected(None, nullable=True)
    if isinstance(default, (list, tuple)):
        return Expected(kind_of(default), is_list=True, non_empty=bool(default), rule=rule, nullable=nullable)
    return Expected(kind_of([default]), rule=rule, nullable=nullable)


def parameter_defaults(nb: nbformat.NotebookNode) -> dict[str, Any]:
    """Default values of the notebook's parameters cell: each top-level ``name = <Python literal>``.

    A name whose (last) value is not a literal (an expression, a call) is left out, so its type is not checked.
    """
    cell = parameters_cell(nb)
    if cell is None:
        return {}
    try:
        body = ast.parse(cell.source).body
    except SyntaxError:  # check_parameters reports it
        return {}
    defaults: dict[str, Any] = {}
    for node in body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name, value = node.targets[0].id, node.value
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            name, value = node.target.id, node.value
        else:
            continue
        try:
            defaults[name] = ast.literal_eval(value)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            defaults.pop(name, None)
    return defaults


def check_profile_values(profiles: Profiles, notebooks_dir: Path, path: Path | str = "profiles.yaml") -> None:
    """Raise ``ConfigError`` for the first value in ``profiles`` that its notebook's parameters cell rules out.

    The message is one line: ``profiles.yaml: <notebook>.<profile>.<key>: expected <what>, got <value>``.
    Sections of unknown notebooks and names the cell does not define are left to ``plan``/``check_parameters``.
    """
    paths = {p.stem: p for p in discover_notebooks(notebooks_dir)}
    for nb_name, section in profiles.notebooks.items():
        if nb_name not in paths:
            continue
        defaults = parameter_defaults(effective_input(paths[nb_name])[0])
        for prof, params in section.items():
            for key, value in params.items():
                if key not in defaults:
                    continue
                expected = expected_value(key, defaults[key])
                if not expected.accepts(value):
                    hint = ""
                    if isinstance(value, str) and expected.kind in (int, float) and "e" in value.lower():
                        try:
                            float(value)
                            hint = f" (YAML reads {value} as a string: give it a decimal point, e.g. 1.0e-3)"
                        except ValueError:
                            pass
                    raise ConfigError(
                        f"{path}: {nb_name}.{prof}.{key}: expected {expected.describe()}, got {value!r}{hint}"
                    )


def defined_parameters(nb: nbformat.NotebookNode) -> set[str]:
    """Names assigned at top level of the notebook's ``parameters`` cell (empty set if it has none)."""
    cell = parameters_cell(nb)
    if cell is None:
        return set()
    names: set[str] = set()
    try:
        body = ast.parse(cell.source).body
    except SyntaxError as exc:
        raise ConfigError(f"the parameters cell is not valid Python: {exc}") from None
    for node in body:
        targets = (
            node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        )
        for target in targets:
            for sub in ast.walk(target):
                if isinstance(sub, ast.Name):
                    names.add(sub.id)
    return names


def check_parameters(name: str, nb: nbformat.NotebookNode, params: Mapping[str, Any]) -> None:
    """Raise ``ConfigError`` unless the parameters cell defines every injected name."""
    if parameters_cell(nb) is None:
        raise ConfigError(f"notebook {name} has no code cell tagged 'parameters' (papermill injects after it)")
    defined = defined_parameters(nb)
    missing = sorted(set(params) - defined)
    if missing:
        raise ConfigError(
            f"notebook {name}: parameter(s) {', '.join(map(repr, missing))} (from profiles.yaml or run_all) are not "
            f"defined in its parameters cell; it defines: {', '.join(sorted(defined)) or '(nothing)'}"
        )
