"""Tasks: seeded batch generators at any sequence length, in a registry of named tasks.

* ``"chars"`` — character-level language modelling over CPython's interactive-help text
  (``pydoc_data.topics``, shipped with every Python: no download); fixed 90/10 train/validation split
  by position; ``info()`` records the source, Python version and the SHA-256 of the text.
* ``"passkey"`` — a short digit string hidden at a chosen depth in filler, to be reproduced after a
  query marker (passkey retrieval: Mohtashami & Jaggi 2023, arXiv 2305.16300, §4.1).
* ``"kv_recall"`` — associative recall: (key, value) pairs among filler, then a query key whose value
  is the target, the queried pair at a controlled distance (Zoology MQAR, Arora et al. 2023,
  arXiv 2312.04927, single-query form).
* ``"copy"`` / ``"reverse"`` — algorithmic tasks ``[BOS] s [SEP] s' [EOS] [PAD]…``, loss on ``s' [EOS]``
  only; train on instance lengths up to what ``T`` allows, test longer (Kazemnejad et al. 2023,
  arXiv 2305.19466, §3).

Conventions, shared by every task: ``sample(batch_size, length, generator, **controls) -> Batch`` where
``length`` is the model's sequence length ``T``; a task builds ``T + 1`` tokens ``s`` and returns
``x = s[:, :T]`` and ``y = s[:, 1:]`` (next-token targets) with ``y = -100`` wherever the loss is not
scored. ``controls`` fix what training draws at random (``depth=`` for passkey, ``distance=`` for
kv_recall, ``n=`` for copy/reverse, ``split=`` for chars): that is the evaluation sampler. Batches are
built on the CPU from a NumPy generator seeded by one draw from the torch ``generator``, so the same
generator seed gives the same batch. Bad input raises ``ValueError`` naming the value.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import lzma
import platform
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "BOS_CHAR",
    "Batch",
    "Task",
    "TaskConfig",
    "TASKS",
    "register_task",
    "make_task",
    "task_params",
    "CharsTask",
    "BooksTask",
    "PasskeyTask",
    "KVRecallTask",
    "CopyTask",
    "ReverseTask",
    "IGNORE_INDEX",
    "batch_seed",
    "batch_generator",
]

#: target value of positions that are not scored (``torch.nn.functional.cross_entropy`` default)
IGNORE_INDEX = -100


# -- seeded generators for batches -----------------------------------------------------------------


def batch_seed(seed: int, step: int | str, *extra: int | str) -> int:
    """A 63-bit generator seed derived from ``(seed, step, *extra)`` by SHA-256 (stable across runs,
    processes and platforms; neighbouring steps get unrelated seeds). Training draws the batch of step
    ``s`` from ``batch_generator(seed, s)``, evaluation its samples from ``batch_generator(seed, "eval", ...)``."""
    key = ":".join(str(part) for part in ("ropelib", seed, step, *extra))
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little") & (2**63 - 1)


def batch_generator(seed: int, step: int | str, *extra: int | str) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with ``batch_seed(seed, step, *extra)`` (what ``Task.sample`` takes)."""
    return torch.Generator().manual_seed(batch_seed(seed, step, *extra))


@dataclass
class Batch:
    """One batch: inputs ``x`` (B, T) long, targets ``y`` (B, T) long (-100 = not scored), ``meta``."""

    x: torch.Tensor
    y: torch.Tensor
    meta: dict = field(default_factory=dict)

    def to(self, device: torch.device | str) -> Batch:
        """The same batch with ``x`` and ``y`` on ``device`` (meta unchanged)."""
        return Batch(self.x.to(device), self.y.to(device), self.meta)


# ---------------------------------------------------------------------------------------------
# registry
# ---------------------------------------------------------------------------------------------
#: name -> task class
TASKS: dict[str, type[Task]] = {}


def register_task(name: str) -> Callable[[type[Task]], type[Task]]:
    """Class decorator: add a task class to ``TASKS`` under ``name``."""

    def decorate(cls: type[Task]) -> type[Task]:
        if name in TASKS and TASKS[name] is not cls:
            raise ValueError(f"task {name!r} is already registered by {TASKS[name]!r}")
        cls.name = name
        TASKS[name] = cls
        return cls

    return decorate


def _lookup(name: str) -> type[Task]:
    try:
        return TASKS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}") from None


def task_params(name: str) -> dict[str, Any]:
    """The keyword parameters task ``name`` accepts, with their defaults."""
    sig = inspect.signature(_lookup(name).__init__)
    return {p.name: p.default for p in sig.parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY}


@dataclass(frozen=True)
class TaskConfig:
    """A task by name and keyword parameters (JSON-serialisable); build it with ``make_task``."""

    name: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        accepted = task_params(self.name)  # unknown name -> ValueError listing the known ones
        if not isinstance(self.params, Mapping):
            raise ValueError(f"params must be a mapping, got {self.params!r}")
        _check_known(self.name, self.params, accepted)
        try:
            params = json.loads(json.dumps(dict(self.params), sort_keys=True))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"task params must be JSON-serialisable, got {self.params!r}: {exc}")
        object.__setattr__(self, "params", params)

    def __hash__(self) -> int:  # the params mapping is a dict: hash the canonical JSON instead
        return hash(json.dumps(self.to_dict(), sort_keys=True))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict; ``TaskConfig.from_dict`` inverts it."""
        return {"name": self.name, "params": json.loads(json.dumps(dict(self.params)))}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TaskConfig:
        """Inverse of ``to_dict``; an unknown key raises ValueError."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown TaskConfig field(s) {unknown}; accepted: {', '.join(sorted(names))}")
        return cls(**dict(data))


def _check_known(name: str, params: Mapping[str, Any], accepted: Mapping[str, Any]) -> None:
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {', '.join(map(repr, unknown))} for task {name!r}; "
            f"accepted: {', '.join(sorted(accepted)) or '(none)'}"
        )


def make_task(config_or_name: TaskConfig | str, **params: Any) -> Task:
    """Build a task from a ``TaskConfig`` or a name plus keyword parameters (keywords override)."""
    if isinstance(config_or_name, TaskConfig):
        name, merged = config_or_name.name, {**config_or_name.params, **params}
    else:
        name, merged = config_or_name, dict(params)
    cls = _lookup(name)
    _check_known(name, merged, task_params(name))
    return cls(**merged)


# ---------------------------------------------------------------------------------------------
# base class
# ---------------------------------------------------------------------------------------------
def _check_int(label: str, value: Any, minimum: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{label} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _numpy_rng(generator: torch.Generator | int | None) -> np.random.Generator:
    """A NumPy generator seeded by one draw from ``generator`` (an int seeds a fresh torch generator)."""
    if isinstance(generator, (int, np.integer)) and not isinstance(generator, bool):
        generator = torch.Generator().manual_seed(int(generator))
    elif generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator, an int seed or None, got {generator!r}")
    seed = torch.randint(0, 2**62, (1,), generator=generator).item()
    return np.random.default_rng(seed)


class Task:
    """Base class of every task. Subclasses set ``vocab`` (token names) and implement ``_build``."""

    name: str = "base"
    #: keyword names ``sample`` accepts to fix what training draws at random (the evaluation sampler)
    controls: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.vocab: list[str] = []

    @property
    def vocab_size(self) -> int:
        """Number of token ids (the model's ``vocab_size``)."""
        return len(self.vocab)

    def params(self) -> dict[str, Any]:
        """The task's keyword parameters (what ``TaskConfig.params`` would hold)."""
        return {k: getattr(self, k) for k in task_params(self.name)}

    def info(self) -> dict[str, Any]:
        """Provenance and settings, JSON-serialisable."""
        return {"task": self.name, "params": self.params(), "vocab_size": self.vocab_size}

    def min_length(self) -> int:
        """Smallest sequence length ``T`` the task can fill."""
        return 1

    def sample(
        self, batch_size: int, length: int, generator: torch.Generator | int | None = None, **controls: Any
    ) -> Batch:
        """A batch of ``batch_size`` sequences of ``length`` tokens (see the module docstring)."""
        batch_size = _check_int("batch_size", batch_size, 1)
        length = _check_int("length", length, 1)
        if length < self.min_length():
            raise ValueError(f"length={length} is too short for task {self.name!r}: it needs >= {self.min_length()}")
        unknown = sorted(set(controls) - set(self.controls))
        if unknown:
            raise ValueError(
                f"unknown sample control(s) {', '.join(map(repr, unknown))} for task {self.name!r}; "
                f"accepted: {', '.join(self.controls) or '(none)'}"
            )
        return self._build(batch_size, length, _numpy_rng(generator), **controls)

    def _build(self, batch_size: int, length: int, rng: np.random.Generator, **controls: Any) -> Batch:
        raise NotImplementedError

    def decode(self, ids: torch.Tensor | list[int]) -> str:
        """Token ids -> readable text (space-separated token names; chars: the characters)."""
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        return " ".join(self.vocab[i] if 0 <= i < len(self.vocab) else "<?>" for i in ids)


def _finish(seq: np.ndarray, scored: np.ndarray, meta: dict) -> Batch:
    """``seq`` (B, T+1) tokens, ``scored`` (B, T+1) bool on the *target* tokens -> Batch(x, y, meta)."""
    x = torch.from_numpy(seq[:, :-1].astype(np.int64))  # (B, T)
    y = torch.from_numpy(np.where(scored[:, 1:], seq[:, 1:], IGNORE_INDEX).astype(np.int64))  # (B, T)
    return Batch(x, y, meta)


# ---------------------------------------------------------------------------------------------
# chars: character-level LM on text that ships with Python
# ---------------------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def _pydoc_topics_text() -> str:
    from pydoc_data import topics

    # the help topics in sorted key order, separated by blank lines: a fixed, deterministic text
    return "\n\n".join(topics.topics[key] for key in sorted(topics.topics))


UNKNOWN_CHAR = "\ufffd"
#: the start-of-window token of the character tasks (ASCII STX, "start of text"; never in a corpus):
#: id 1, put at position 0 of every window of a model with ``bos_token_id`` (``ropelib.model.start_windows``)
BOS_CHAR = "\x02"


def _encode(vocab_codes: np.ndarray, text: str) -> torch.Tensor:
    """Characters -> ids ``(N,)`` long of a character vocabulary whose sorted code points (ids 2, 3, ...)
    are ``vocab_codes``; characters outside it map to id 0 (ids 0 and 1: unknown, BOS)."""
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)  # (N,)
    pos = np.searchsorted(vocab_codes, codes)  # (N,)
    pos_c = np.minimum(pos, len(vocab_codes) - 1)
    ids = np.where(vocab_codes[pos_c] == codes, pos_c + 2, 0)
    return torch.from_numpy(ids.astype(np.int64))


@register_task("chars")
class CharsTask(Task):
    """Character-level LM over CPython's ``pydoc_data.topics`` help text (about 465k characters).

    Vocabulary: id 0 is the unknown character (``U+FFFD``, for text outside the corpus), id 1 the
    start-of-window token ``BOS`` (``BOS_CHAR``, never in the text; decodes to nothing), then the
    corpus's distinct characters in sorted order. Split by position: the first ``train_fraction`` of
    the text is ``"train"``, the rest ``"validation"``. ``sample`` draws random windows of ``T + 1``
    characters from ``split`` (default ``"train"``); every position is scored.
    """

    controls = ("split",)
    SPLITS = ("train", "validation")
    BOS = 1  # the start-of-window token's id (``BOS_CHAR``)

    def __init__(self, *, train_fraction: float = 0.9) -> None:
        super().__init__()
        if (
            isinstance(train_fraction, bool)
            or not isinstance(train_fraction, (int, float))
            or not (0.0 < train_fraction < 1.0)
        ):
            raise ValueError(f"train_fraction must be a number in (0, 1), got {train_fraction!r}")
        self.train_fraction = float(train_fraction)
        self.text = _pydoc_topics_text()
        self.vocab = [UNKNOWN_CHAR, BOS_CHAR] + sorted(set(self.text) - {UNKNOWN_CHAR, BOS_CHAR})
        self._codes = np.array([ord(c) for c in self.vocab[2:]], dtype=np.int64)  # sorted code points
        all_ids = self.encode(self.text)  # (N,)
        cut = int(round(len(all_ids) * self.train_fraction))
        self._splits = {"train": all_ids[:cut], "validation": all_ids[cut:]}

    def encode(self, text: str) -> torch.Tensor:
        """Characters -> ids ``(N,)`` long; characters outside the vocabulary map to id 0."""
        if not isinstance(text, str):
            raise ValueError(f"text must be a str, got {type(text).__name__}")
        return _encode(self._codes, text)

    def decode(self, ids: torch.Tensor | list[int]) -> str:
        """Ids -> text (``BOS`` decodes to nothing, an id outside the vocabulary to ``U+FFFD``)."""
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        return "".join("" if i == self.BOS else self.vocab[i] if 1 < i < len(self.vocab) else UNKNOWN_CHAR for i in ids)

    def tokens(self, split: str = "validation") -> torch.Tensor:
        """All ids of ``split`` (``"train"`` or ``"validation"``) as ``(N,)`` long, for perplexity."""
        if split not in self.SPLITS:
            raise ValueError(f"unknown split {split!r}; allowed: {', '.join(self.SPLITS)}")
        return self._splits[split]

    def info(self) -> dict[str, Any]:
        """Source module, Python version, SHA-256 of the text (UTF-8), sizes of the splits."""
        out = super().info()
        out.update(
            source="pydoc_data.topics (CPython interactive help topics, sorted by key, joined by blank lines)",
            python_version=platform.python_version(),
            python_implementation=platform.python_implementation(),
            sha256=hashlib.sha256(self.text.encode("utf-8")).hexdigest(),
            n_chars=len(self.text),
            n_train=int(self._splits["train"].numel()),
            n_validation=int(self._splits["validation"].numel()),
        )
        return out

    def min_length(self) -> int:
        return 1

    def _build(self, batch_size: int, length: int, rng: np.random.Generator, split: str = "train") -> Batch:
        data = self.tokens(split).numpy()  # (N,)
        if length + 1 > len(data):
            raise ValueError(f"length={length} is too long for the {split!r} split of {len(data)} characters")
        starts = rng.integers(0, len(data) - length, size=batch_size)  # (B,)
        seq = data[starts[:, None] + np.arange(length + 1)[None, :]]  # (B, T+1)
        return _finish(seq, np.ones_like(seq, dtype=bool), {"start": torch.from_numpy(starts), "split": split})


# ---------------------------------------------------------------------------------------------
# books: character-level LM on public-domain novels committed with the project
# ---------------------------------------------------------------------------------------------
#: the committed snapshot (``data/build_books.py`` built it; ``data/books_manifest.json`` lists the books)
BOOKS_PATH = Path(__file__).resolve().parent / "corpora" / "books.jsonl.xz"
#: SHA-256 of the snapshot's uncompressed JSON lines: every result records it, and loading checks it
BOOKS_SHA256 = "3f138c1007a46a389cafb586b271422f8577b6cc7b68a18663ffed46b16b17c8"
#: separator between consecutive sections of a split (a section never runs into the next one unmarked)
SECTION_SEPARATOR = "\n\n"


@lru_cache(maxsize=1)
def _books_sections() -> tuple[dict, ...]:
    """The snapshot's sections (dicts with ``ebook, title, section, text``), hash checked."""
    try:
        raw = lzma.decompress(BOOKS_PATH.read_bytes())
    except FileNotFoundError:
        raise ValueError(f"the books corpus {BOOKS_PATH} is missing: reinstall the project") from None
    except lzma.LZMAError as exc:
        raise ValueError(f"the books corpus {BOOKS_PATH} is corrupt ({exc}): restore it from git") from None
    digest = hashlib.sha256(raw).hexdigest()
    if digest != BOOKS_SHA256:
        raise ValueError(f"the books corpus {BOOKS_PATH} has SHA-256 {digest}, expected {BOOKS_SHA256}")
    return tuple(json.loads(line) for line in raw.decode("utf-8").splitlines())


def _section_rank(ebook: int, section: int) -> str:
    return hashlib.sha256(f"{ebook}:{section}".encode()).hexdigest()


@lru_cache(maxsize=4)
def _books_splits(validation_sections: int, test_sections: int) -> tuple[dict, tuple, np.ndarray, dict]:
    """The split of the snapshot (``BooksTask``'s docstring): its sections per split, the vocabulary, the
    sorted code points and each split's ids ``(N,)``. Built once per process and parameters (encoding
    12M characters takes most of a second), then shared by every ``BooksTask`` of these parameters."""
    sections = _books_sections()
    by_book: dict[int, list[dict]] = {}
    for rec in sections:
        by_book.setdefault(rec["ebook"], []).append(rec)
    held = validation_sections + test_sections
    too_small = [e for e, recs in by_book.items() if len(recs) <= held]
    if too_small:
        raise ValueError(
            f"validation_sections + test_sections = {held} leaves no training text for ebook(s) {too_small}"
        )
    split_of: dict[tuple[int, int], str] = {}
    for ebook, recs in by_book.items():
        ranked = sorted(recs, key=lambda r: _section_rank(ebook, r["section"]))
        for i, rec in enumerate(ranked):
            split = "validation" if i < validation_sections else "test" if i < held else "train"
            split_of[(ebook, rec["section"])] = split
    documents = {s: tuple(r for r in sections if split_of[(r["ebook"], r["section"])] == s) for s in BooksTask.SPLITS}
    text = SECTION_SEPARATOR.join(r["text"] for r in sections)
    vocab = (UNKNOWN_CHAR, BOS_CHAR, *sorted(set(text) - {UNKNOWN_CHAR, BOS_CHAR}))
    codes = np.array([ord(c) for c in vocab[2:]], dtype=np.int64)  # sorted code points
    splits = {s: _encode(codes, SECTION_SEPARATOR.join(r["text"] for r in docs)) for s, docs in documents.items()}
    return documents, vocab, codes, splits


@register_task("books")
class BooksTask(Task):
    """Character-level LM over 14 public-domain English novels (about 12M characters).

    The corpus: Project Gutenberg e-texts of Austen, Dickens, the Brontes, Eliot, Melville, Shelley,
    Stoker, Conan Doyle, Twain and Alcott, normalised to printable ASCII, one line per paragraph, cut
    into sections of at least 8,000 characters at paragraph ends (``data/build_books.py``). A section
    is the unit of the split, so no text is shared between splits: from every book,
    ``validation_sections`` sections go to ``"validation"`` and ``test_sections`` to ``"test"`` (the
    sections of lowest SHA-256 rank of ``"ebook:section"``, a fixed pseudo-random choice), the rest to
    ``"train"``. Validation and test therefore hold whole sections of every book. Within a split the
    sections are joined in (ebook, section) order with a blank line. ``sample`` draws random windows of
    ``T + 1`` characters from ``split`` (default ``"train"``); every position is scored.
    Vocabulary: id 0 is the unknown character, id 1 the start-of-window token ``BOS``, then the
    corpus's distinct characters in sorted order.
    """

    controls = ("split",)
    SPLITS = ("train", "validation", "test")
    BOS = 1  # the start-of-window token's id (``BOS_CHAR``)

    def __init__(self, *, validation_sections: int = 1, test_sections: int = 1) -> None:
        super().__init__()
        self.validation_sections = _check_int("validation_sections", validation_sections, 1)
        self.test_sections = _check_int("test_sections", test_sections, 1)
        documents, vocab, codes, splits = _books_splits(self.validation_sections, self.test_sections)
        self._documents = {s: list(docs) for s, docs in documents.items()}
        self.vocab = list(vocab)
        self._codes = codes  # sorted code points
        self._splits = splits  # shared by every BooksTask of these parameters: not to be written to

    encode = CharsTask.encode
    decode = CharsTask.decode
    min_length = CharsTask.min_length
    _build = CharsTask._build

    def tokens(self, split: str = "validation") -> torch.Tensor:
        """All ids of ``split`` (``"train"``, ``"validation"`` or ``"test"``) as ``(N,)`` long."""
        if split not in self.SPLITS:
            raise ValueError(f"unknown split {split!r}; allowed: {', '.join(self.SPLITS)}")
        return self._splits[split]

    def documents(self, split: str = "validation") -> list[dict]:
        """The sections of ``split``: dicts with ``ebook``, ``title``, ``section`` and ``text``."""
        self.tokens(split)  # validates the name
        return list(self._documents[split])

    def info(self) -> dict[str, Any]:
        """Source, SHA-256 of the snapshot, and per split the number of sections, books and characters."""
        out = super().info()
        out.update(
            source="14 public-domain Project Gutenberg novels (data/books_manifest.json), ropelib/corpora/books.jsonl.xz",
            sha256=BOOKS_SHA256,
            n_chars=int(sum(len(r["text"]) for docs in self._documents.values() for r in docs)),
            **{f"n_{s}": int(self._splits[s].numel()) for s in self.SPLITS},
            **{f"n_{s}_sections": len(self._documents[s]) for s in self.SPLITS},
            **{f"n_{s}_books": len({r["ebook"] for r in self._documents[s]}) for s in self.SPLITS},
        )
        return out


# ---------------------------------------------------------------------------------------------
# passkey retrieval
# ---------------------------------------------------------------------------------------------
@register_task("passkey")
class PasskeyTask(Task):
    """``f f … KEY d1 … dk f … f KEY d1 … dk``: after the second ``KEY`` (the query), reproduce the digits.

    As in the original prompt, which ends by repeating "The pass key is", the query repeats the
    needle's marker, so one induction head (Olsson et al. 2022) can solve it. Vocabulary: ids 0-9 the
    digits, then ``n_filler`` filler tokens, then ``KEY``. The ``n_digits`` digits are drawn without
    replacement (so the copy is unambiguous) and the filler uniformly. The needle ``KEY d1 … dk``
    starts at ``depth`` (0 = first token, 1 = right before the query) of the room left for it;
    training draws depth uniformly. Scored: the ``k`` digit predictions from the query ``KEY`` on.
    ``meta``: ``depth`` (float, B), ``distance`` (tokens between the needle's last digit and the query,
    long, B). Needs ``T >= 2k + 1``.

    ``digit_filler=True`` draws the filler uniformly from the digits *and* the filler tokens, so the
    needle's digits hide among digits that mean nothing: which digits appeared no longer tells the
    answer, and the position-blind floor falls from ``1/k!`` to a few percent (``position_blind_floor``).
    """

    controls = ("depth",)

    def __init__(self, *, n_digits: int = 4, n_filler: int = 4, digit_filler: bool = False) -> None:
        super().__init__()
        self.n_digits = _check_int("n_digits", n_digits, 1)
        if self.n_digits > 10:
            raise ValueError(f"n_digits must be <= 10 (distinct digits), got {n_digits!r}")
        self.n_filler = _check_int("n_filler", n_filler, 1)
        if not isinstance(digit_filler, bool):
            raise ValueError(f"digit_filler must be True or False, got {digit_filler!r}")
        self.digit_filler = digit_filler
        self.vocab = [str(d) for d in range(10)] + [f"f{i}" for i in range(self.n_filler)] + ["KEY"]
        self.KEY = len(self.vocab) - 1

    def min_length(self) -> int:
        return 2 * self.n_digits + 1

    def position_blind_floor(self, length: int | None = None, n_samples: int = 20_000, seed: int = 0) -> float:
        """Best teacher-forced exact match of any predictor that sees only bags of input tokens.

        Digit-free filler (``digit_filler=False``): exactly ``1 / k!``, whatever the length (below).
        With ``digit_filler=True`` it depends on the sequence ``length`` (required) and is estimated by
        Monte Carlo (``n_samples`` sequences, NumPy generator ``seed``) as an *upper bound*: the
        exact-match rate of the Bayes-optimal predictor that knows the digit counts ``c`` of the bag
        before the answer and, in addition, which digits were already given. Given ``c``, the needle's
        digit *set* ``A`` has posterior ``prod_{i in A} c_i`` (the filler digits are multinomial, so
        removing the needle's digits from the counts multiplies their likelihood by ``prod c_i``), its
        ``k!`` orders are equally likely, and a deterministic predictor is right on all ``k`` digits for
        exactly one ordered tuple; so its best exact match is ``max_A P(A | c)`` = the product of the
        ``k`` largest counts over ``k! e_k(c)`` (``e_k`` the elementary symmetric polynomial). A
        predictor that sees only the bag knows less, so its floor is at most this.

        Digit-free filler, the argument for ``1 / k!``:

        The predictor: each scored prediction (digit ``i`` of ``k``, made at the query ``KEY`` or at an
        answer digit) sees the multiset (bag) of the inputs up to and including its position, never
        their order — what a causal model with no access to order could use. The argument: the filler
        holds no digit and the needle's ``k`` digits are distinct, so the bag before digit ``i`` shows
        the set ``D`` of the needle's digits and, by their doubled counts, the *set* of the ``i - 1``
        digits already given (teacher forcing), but not the order of either; the rest of the bag (the
        filler counts, two ``KEY``) does not depend on the order. So a deterministic bag predictor is a
        rule ``d_i = f_i(D, {d_1 … d_{i-1}}, rest)``, and given ``D`` and the rest it is right on all
        ``k`` digits for at most one of the ``k!`` equally likely orders of ``D`` (the one the rule
        builds digit by digit): probability at most ``1 / k!`` (a randomised rule is a mixture of
        deterministic ones). Naming any not-yet-repeated digit of ``D`` attains it. ``k = 2``: 0.5,
        ``k = 4``: 1/24. Independent of length and depth.

        This bounds predictors blind to order. A causal decoder without a positional encoding is not
        one — the causal mask lets it infer positions (Haviv et al. 2022, arXiv 2203.16634;
        Kazemnejad et al. 2023, arXiv 2305.19466) — so such a model may exceed the floor.
        """
        import math

        if not self.digit_filler:
            return 1.0 / math.factorial(self.n_digits)
        if length is None:
            raise ValueError("position_blind_floor(length) needs the sequence length when digit_filler=True")
        length = _check_int("length", length, self.min_length())
        n_samples = _check_int("n_samples", n_samples, 1)
        batch = self._build(n_samples, length, np.random.default_rng(seed))
        room = length - self.n_digits  # the query KEY's index: the bag before the answer is x[:, :room]
        bag = batch.x[:, :room].numpy()  # (N, room)
        counts = np.stack([(bag == d).sum(1) for d in range(10)], axis=1).astype(np.float64)  # (N, 10)
        k = self.n_digits
        e = np.zeros((n_samples, k + 1))  # e[:, j] = e_j(c), by the recurrence over digits
        e[:, 0] = 1.0
        for d in range(10):
            e[:, 1:] = e[:, 1:] + counts[:, d : d + 1] * e[:, :-1]
        top = np.sort(counts, axis=1)[:, ::-1][:, :k].prod(1)  # (N,) product of the k largest counts
        return float(np.mean(top / (math.factorial(k) * e[:, k])))

    def _build(self, batch_size: int, length: int, rng: np.random.Generator, depth: float | None = None) -> Batch:
        k = self.n_digits
        room = length - k  # filler region holding the needle, before the query KEY
        last_start = room - (k + 1)  # the latest start of the needle
        if depth is None:
            starts = rng.integers(0, last_start + 1, size=batch_size)  # (B,)
        else:
            if isinstance(depth, bool) or not isinstance(depth, (int, float)) or not (0.0 <= depth <= 1.0):
                raise ValueError(f"depth must be a number in [0, 1], got {depth!r}")
            starts = np.full(batch_size, int(round(depth * last_start)))
        low = 0 if self.digit_filler else 10  # digit filler: digits 0-9 as well as the filler tokens
        seq = rng.integers(low, 10 + self.n_filler, size=(batch_size, length + 1))  # (B, T+1) filler
        digits = np.argsort(rng.random((batch_size, 10)), axis=1)[:, :k]  # (B, k) distinct digits
        rows = np.arange(batch_size)[:, None]
        seq[rows, starts[:, None] + np.arange(k + 1)[None, :]] = np.concatenate(
            [np.full((batch_size, 1), self.KEY), digits], axis=1
        )
        seq[:, room] = self.KEY  # the query
        seq[:, room + 1 :] = digits  # (B, k)
        scored = np.zeros_like(seq, dtype=bool)
        scored[:, room + 1 :] = True
        meta = {
            "depth": torch.from_numpy(starts / max(last_start, 1)).float(),
            "distance": torch.from_numpy(room - (starts + k + 1)),
        }
        return _finish(seq, scored, meta)


# ---------------------------------------------------------------------------------------------
# key-value associative recall
# ---------------------------------------------------------------------------------------------
@register_task("kv_recall")
class KVRecallTask(Task):
    """``… k1 v1 … k2 v2 … [QUERY] kq`` -> ``vq``: the value paired with the queried key.

    Associative recall with distractor pairs (Zoology MQAR, Arora et al. 2023, arXiv 2312.04927,
    single-query form). Vocabulary: ``n_keys`` keys, ``n_values`` values, ``n_filler`` fillers,
    ``QUERY``. Each sequence holds ``n_pairs`` pairs with distinct keys at random places among filler;
    the values are drawn uniformly with replacement (default) or, with ``distinct_values=True``,
    without replacement (needs ``n_values >= n_pairs``). One pair is queried, with ``distance`` tokens
    between its value and ``QUERY`` (training: uniform over ``distances(T)``, the values that leave
    room for every pair). Scored: the one prediction after the query key. ``meta``: ``distance``
    (long, B). Needs ``T >= 2 * n_pairs + 2``.

    Solving it needs order: the bag of input tokens shows the queried key (twice) and the candidate
    values but not which value sits next to which key. ``position_blind_floor()`` is the best a
    bag-of-tokens predictor can do: ``1 / n_pairs`` with ``distinct_values=True``.
    """

    controls = ("distance",)

    def __init__(
        self,
        *,
        n_pairs: int = 4,
        n_keys: int = 16,
        n_values: int = 16,
        n_filler: int = 4,
        distinct_values: bool = False,
    ) -> None:
        super().__init__()
        self.n_pairs = _check_int("n_pairs", n_pairs, 1)
        self.n_keys = _check_int("n_keys", n_keys, 1)
        self.n_values = _check_int("n_values", n_values, 1)
        self.n_filler = _check_int("n_filler", n_filler, 1)
        if self.n_pairs > self.n_keys:
            raise ValueError(f"n_pairs={n_pairs} needs as many distinct keys, but n_keys={n_keys}")
        if not isinstance(distinct_values, (bool, np.bool_)):
            raise ValueError(f"distinct_values must be True or False, got {distinct_values!r}")
        self.distinct_values = bool(distinct_values)
        if self.distinct_values and self.n_pairs > self.n_values:
            raise ValueError(
                f"distinct_values=True draws n_pairs={n_pairs} values without replacement, but n_values={n_values}; "
                f"need n_values >= n_pairs (or distinct_values=False)"
            )
        self.vocab = (
            [f"k{i}" for i in range(self.n_keys)]
            + [f"v{i}" for i in range(self.n_values)]
            + [f"f{i}" for i in range(self.n_filler)]
            + ["QUERY"]
        )
        self.QUERY = len(self.vocab) - 1

    def min_length(self) -> int:
        return 2 * self.n_pairs + 2

    def distances(self, length: int) -> list[int]:
        """Every ``distance`` that fits in sequence length ``length`` with all ``n_pairs`` pairs."""
        room = length - 4  # tokens besides [QUERY] kq and the queried pair
        # distractor pairs need 2 tokens each, left (room - d tokens) or right (d tokens) of the pair
        return [d for d in range(room + 1) if (room - d) // 2 + d // 2 >= self.n_pairs - 1]

    def max_distance(self, length: int) -> int:
        """Largest ``distance`` that fits in sequence length ``length``."""
        return self.distances(length)[-1]

    def position_blind_floor(self) -> float:
        """Best exact match of any predictor that sees only the bag (multiset) of input tokens.

        The argument. The inputs' bag holds every key of the sequence once except the queried key
        (twice: in its pair and after ``QUERY``), the multiset ``M`` of the ``n`` = ``n_pairs`` values,
        the filler counts and one ``QUERY``. The values, listed pair by pair, are drawn independently
        of the keys and of the layout (which alone sets the filler counts), and exchangeably (i.i.d.,
        or without replacement), so given the bag the queried value is each of the ``n`` listed values
        with equal probability: ``P(v_q = v | bag) = m_v / n``, ``m_v`` the count of ``v`` in ``M``. The
        Bayes-optimal bag predictor names a most frequent value, right with probability
        ``max_v m_v / n``; the floor is ``E[max_v m_v] / n``. It depends on neither length nor distance.

        * ``distinct_values=True``: every ``m_v`` is 0 or 1, so the floor is exactly ``1 / n_pairs``.
        * with replacement (default): ``M`` is multinomial(``n``, uniform over ``V`` = ``n_values``) and
          ``E[max_v m_v] = sum_{c=0}^{n-1} (1 - N_c / V^n)``, with ``N_c = n! [x^n] (sum_{i<=c} x^i/i!)^V``
          the number of sequences of ``n`` values from ``V`` with no value more than ``c`` times;
          computed exactly in integers. The defaults (``n_pairs=4``, ``n_values=16``) give
          ``1381 / 4096 = 0.337``, above ``1 / 4``: repeated values help a bag predictor.

        This bounds predictors blind to order. A causal decoder without a positional encoding is not
        one — the causal mask lets it infer positions (Haviv et al. 2022, arXiv 2203.16634;
        Kazemnejad et al. 2023, arXiv 2305.19466) — so such a model may exceed the floor.
        """
        n = self.n_pairs
        if self.distinct_values:
            return 1.0 / n
        return float(self._expected_max_count(n, self.n_values) / n)

    @staticmethod
    def _expected_max_count(n: int, n_symbols: int) -> Fraction:
        """Exact ``E[max_v m_v]`` for ``n`` i.i.d. uniform draws from ``n_symbols`` symbols (a Fraction)."""
        from fractions import Fraction
        from math import comb

        def egf_product(f: list[int], g: list[int]) -> list[int]:  # exponential generating functions
            return [sum(comb(j, i) * f[i] * g[j - i] for i in range(j + 1)) for j in range(n + 1)]

        total = n_symbols**n
        expected = Fraction(0)
        for c in range(n):  # E[max] = sum_{c >= 0} P(max > c)
            base = [1 if i <= c else 0 for i in range(n + 1)]  # one symbol used at most c times
            power, e = [1] + [0] * n, n_symbols
            while e:  # base ** n_symbols by squaring
                if e & 1:
                    power = egf_product(power, base)
                base, e = egf_product(base, base), e >> 1
            expected += Fraction(total - power[n], total)  # power[n] = N_c
        return expected

    def _build(self, batch_size: int, length: int, rng: np.random.Generator, distance: int | None = None) -> Batch:
        region = length - 2  # pairs and filler, then [QUERY] kq (then the target vq)
        allowed = np.array(self.distances(length))  # training: uniform over these
        if distance is not None:
            distance = _check_int("distance", distance, 0)
            if distance not in allowed:
                raise ValueError(
                    f"distance={distance} does not fit in length={length} with n_pairs={self.n_pairs}: "
                    f"allowed 0..{allowed[-1]}" + ("" if len(allowed) == allowed[-1] + 1 else " (some values excluded)")
                )
        seq = rng.integers(
            self.n_keys + self.n_values, self.n_keys + self.n_values + self.n_filler, size=(batch_size, length + 1)
        )  # (B, T+1) filler
        dist = np.empty(batch_size, dtype=np.int64)
        for b in range(batch_size):
            keys = rng.permutation(self.n_keys)[: self.n_pairs]  # distinct keys; keys[0] is queried
            if self.distinct_values:  # without replacement
                values = self.n_keys + rng.choice(self.n_values, size=self.n_pairs, replace=False)
            else:  # with replacement (the original draw: same batches for the same seed)
                values = rng.integers(self.n_keys, self.n_keys + self.n_values, size=self.n_pairs)
            d = int(allowed[rng.integers(len(allowed))]) if distance is None else distance
            q_start = region - 2 - d  # the queried pair occupies q_start, q_start + 1
            # distractor pairs: each goes left or right of the queried pair where 2-token room is left
            room = {"left": q_start, "right": d}
            side_pairs = {"left": [], "right": []}
            for j in range(1, self.n_pairs):
                sides = [s for s in ("left", "right") if room[s] >= 2]
                assert sides, "distances() guarantees room for every pair"
                side = sides[int(rng.integers(len(sides)))]
                room[side] -= 2
                side_pairs[side].append(j)
            for side, begin, size in (("left", 0, q_start), ("right", q_start + 2, d)):
                # random order of units (a pair or a filler token) filling `size` tokens
                units = side_pairs[side] + [-1] * (size - 2 * len(side_pairs[side]))
                pos = begin
                for u in rng.permutation(np.array(units, dtype=np.int64)) if units else []:
                    if u >= 0:
                        seq[b, pos], seq[b, pos + 1] = keys[u], values[u]
                        pos += 2
                    else:
                        pos += 1
            seq[b, q_start], seq[b, q_start + 1] = keys[0], values[0]
            seq[b, region], seq[b, region + 1], seq[b, region + 2] = self.QUERY, keys[0], values[0]
            dist[b] = d
        scored = np.zeros_like(seq, dtype=bool)
        scored[:, region + 2] = True
        return _finish(seq, scored, {"distance": torch.from_numpy(dist)})


# ---------------------------------------------------------------------------------------------
# copy / reverse (Kazemnejad et al. 2023)
# ---------------------------------------------------------------------------------------------
class _SequenceTask(Task):
    """``[BOS] s [SEP] f(s) [EOS] [PAD]…`` with ``s`` of ``n`` random symbols; scored: ``f(s) [EOS]``.

    Instance length from ``T``: the ``2n + 3`` tokens must fit in ``T + 1``, so ``n <= (T - 2) // 2``
    (``max_n(T)``). Training draws ``n`` uniformly in ``[1, max_n(T)]``; ``n=`` fixes it. Vocabulary:
    ``n_symbols`` symbols, then ``PAD``, ``BOS``, ``SEP``, ``EOS``. ``meta``: ``n`` (long, B).
    """

    controls = ("n",)

    def __init__(self, *, n_symbols: int = 10) -> None:
        super().__init__()
        self.n_symbols = _check_int("n_symbols", n_symbols, 2)
        self.vocab = [f"s{i}" for i in range(self.n_symbols)] + ["PAD", "BOS", "SEP", "EOS"]
        self.PAD, self.BOS, self.SEP, self.EOS = range(self.n_symbols, self.n_symbols + 4)

    @staticmethod
    def max_n(length: int) -> int:
        """Longest instance that fits in sequence length ``length``."""
        return (length - 2) // 2

    def min_length(self) -> int:
        return 4

    def _transform(self, s: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _build(self, batch_size: int, length: int, rng: np.random.Generator, n: int | None = None) -> Batch:
        n_max = self.max_n(length)
        if n is None:
            ns = rng.integers(1, n_max + 1, size=batch_size)  # (B,)
        else:
            n = _check_int("n", n, 1)
            if n > n_max:
                raise ValueError(f"n={n} does not fit in length={length}: at most {n_max} ((T - 2) // 2)")
            ns = np.full(batch_size, n)
        seq = np.full((batch_size, length + 1), self.PAD, dtype=np.int64)  # (B, T+1)
        scored = np.zeros_like(seq, dtype=bool)
        symbols = rng.integers(0, self.n_symbols, size=(batch_size, n_max))  # (B, n_max)
        for b in range(batch_size):
            m = int(ns[b])
            s = symbols[b, :m]
            seq[b, 0] = self.BOS
            seq[b, 1 : m + 1] = s
            seq[b, m + 1] = self.SEP
            seq[b, m + 2 : 2 * m + 2] = self._transform(s)
            seq[b, 2 * m + 2] = self.EOS
            scored[b, m + 2 : 2 * m + 3] = True
        return _finish(seq, scored, {"n": torch.from_numpy(ns.astype(np.int64))})


@register_task("copy")
class CopyTask(_SequenceTask):
    __doc__ = "Copy: ``f(s) = s``. " + (_SequenceTask.__doc__ or "")

    def _transform(self, s: np.ndarray) -> np.ndarray:
        return s


@register_task("reverse")
class ReverseTask(_SequenceTask):
    __doc__ = "Reverse: ``f(s) = s[::-1]``. " + (_SequenceTask.__doc__ or "")

    def _transform(self, s: np.ndarray) -> np.ndarray:
        return s[::-1]
