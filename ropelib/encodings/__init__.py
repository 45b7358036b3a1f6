"""Every positional encoding behind one interface (see ``base.py``), and the registry of names.

``make_encoding("alibi", n_heads=4, head_dim=32, d_model=128)`` builds one; ``ENCODINGS`` lists them.
Importing this package registers every built-in encoding: one import line per module below.
"""

from .base import (
    ENCODINGS,
    PositionalEncoding,
    encoding_params,
    make_encoding,
    register_encoding,
    resolved_params,
)

# Built-in encodings: each import registers one or more names. Uncomment a line when its module lands.
from . import nope  # noqa: F401  "nope"
from . import sinusoidal  # noqa: F401  "sinusoidal"
from . import learned  # noqa: F401  "learned"
from . import t5  # noqa: F401  "t5"
from . import alibi  # noqa: F401  "alibi"
from . import kerple  # noqa: F401  "kerple"
from . import fire  # noqa: F401  "fire"
from . import randomized  # noqa: F401  "randomized" (wrapper around any other)
from . import rope  # noqa: F401  "rope" (every HF rope_type)
from . import xpos  # noqa: F401  "xpos"

from .alibi import alibi_slopes  # noqa: E402
from .sinusoidal import sinusoidal_table  # noqa: E402
from .t5 import t5_relative_bucket  # noqa: E402

__all__ = [
    "ENCODINGS",
    "PositionalEncoding",
    "alibi_slopes",
    "encoding_params",
    "make_encoding",
    "register_encoding",
    "resolved_params",
    "sinusoidal_table",
    "t5_relative_bucket",
]
