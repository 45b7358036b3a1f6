"""ropelib: rotary positional embeddings and their rivals, tested against the reference implementations.

Submodules (one concept each): ``rope`` (RoPE and its scaling family), ``encodings`` (every positional
encoding behind one interface), ``model`` (toy transformer), ``data`` (tasks and corpora), ``train``,
``evaluate``, ``runs`` (cached, resumable runs and sweeps), ``analysis`` (closed-form quantities),
``model_configs`` (published RoPE settings), ``plotting`` (shared style and ``savefig``).
"""

__version__ = "0.1.0"
