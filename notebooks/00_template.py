# %% [markdown]
# # 00 — Template: add your own positional encoding and compare it
#
# A short, runnable starting point for a new notebook. It shows the three things every notebook in
# this collection does:
#
# 1. **define** a positional encoding inline — subclass `ropelib.encodings.PositionalEncoding`, override
#    the hook it needs (`embed`, `rotate` or `bias`) and register it with `@register_encoding(name)`;
# 2. **train** it beside two built-ins through `ropelib.runs.run(spec)` — a cached, resumable run, so
#    re-executing the notebook reads finished runs back instead of training again;
# 3. **plot** the comparison in the shared style (`ropelib.plotting`) and save it with `savefig`, which
#    writes PNG + SVG under `figures/<this notebook's name>/` and records the caption for the gallery.
#
# The example encoding is a *logarithmic distance bias*: head $h$ adds $-m_h \log(1 + |i - j|)$ to the
# attention logit of query $i$ and key $j$, with ALiBi's slopes $m_h$ (Press et al. 2021, arXiv
# 2108.12409, §3). It is the fixed-slope special case of KERPLE's logarithmic kernel
# $-r_1 \log(1 + r_2 |i - j|)$ (Chi et al. 2022, arXiv 2205.09921, §3), which learns $r_1, r_2$.
#
# Every knob is in the `parameters` cell below; `run_all.py` injects the values of the chosen profile
# (`profiles.yaml`, the section named like this notebook). To start your own notebook from this one:
# `.venv/bin/python run_all.py --new NN_my_idea` (README, "Fork").

# %% tags=["parameters"]
profile = "default"  # smoke | default | full (run_all.py injects it)
device = "auto"  # auto | cpu | cuda | mps
steps = 150  # training steps per model
batch_size = 8
seq_len = 64  # training context length
d_model = 64
n_layers = 2
n_heads = 4
eval_multiples = [1, 2, 4]  # evaluate at seq_len times each of these
eval_windows = 16  # validation windows per evaluation length
seed = 0

# %% tags=["injected-parameters"]
# Parameters
batch_size = 8
d_model = 64
device = "auto"
eval_multiples = [1, 2, 4]
eval_windows = 16
n_heads = 4
n_layers = 2
profile = "default"
seq_len = 64
steps = 150

# %%
import matplotlib.pyplot as plt
import pandas as pd
import torch

from ropelib.data import TaskConfig, make_task
from ropelib.encodings import ENCODINGS, PositionalEncoding, register_encoding
from ropelib.encodings.alibi import alibi_slopes
from ropelib.encodings.base import heads_first, relative_positions
from ropelib.evaluate import lm_loss_at_lengths
from ropelib.model import ModelConfig, select_device
from ropelib.paths import atomic_write_text, notebook_name, results_dir
from ropelib.plotting import color_for, savefig, set_theme
from ropelib.provenance import show_provenance
from ropelib.runs import RunSpec, run
from ropelib.train import TrainConfig

# this file's name (run_all.py passes it; a copy gets its own): figures go to figures/<NOTEBOOK>/,
# the table to results/<NOTEBOOK>.csv
NOTEBOOK = notebook_name(fallback="00_template")
set_theme()
torch_device = select_device(device)
print(f"profile={profile}, device={torch_device}")

# %% [markdown]
# ## 1. Define the encoding
#
# A bias encoding overrides `bias(q_positions, k_positions)` and returns float32 logits of shape
# `(H, Tq, Tk)`. Positions arrive as integer (`torch.long`) tensors; distances are formed in integers
# and converted to float64 before the logarithm, so nothing is lost at large positions. Every
# constructor parameter is keyword-only with a default, so `ModelConfig(encoding_params=...)` can
# validate and serialise it.
#
# The run cache is keyed by the encoding's *name and parameters*, not its code: after changing the
# class, give it a new name (or delete its runs from the cache).

# %%
ENCODINGS.pop("log_distance", None)  # so this cell can be re-run in an interactive session


@register_encoding("log_distance")
class LogDistanceBias(PositionalEncoding):
    """Fixed bias ``-slope_scale * m_h * log(1 + |i - j|)`` per head, ``m_h`` = ALiBi's slopes."""

    def __init__(self, *, n_heads: int, head_dim: int, d_model: int, slope_scale: float = 1.0) -> None:
        super().__init__(n_heads=n_heads, head_dim=head_dim, d_model=d_model)
        if not slope_scale > 0:
            raise ValueError(f"slope_scale must be > 0, got {slope_scale!r}")
        # a tuple of Python floats, not a buffer, so a reduced-precision model cannot round it
        self.slopes = tuple(slope_scale * m for m in alibi_slopes(n_heads))

    def bias(self, q_positions: torch.Tensor, k_positions: torch.Tensor) -> torch.Tensor:
        distance = relative_positions(q_positions, k_positions).abs().to(torch.float64)  # (Tq, Tk)
        slopes = torch.tensor(self.slopes, dtype=torch.float64, device=distance.device)  # (H,)
        return heads_first(-torch.log1p(distance)[..., None] * slopes).to(torch.float32)  # (H, Tq, Tk)


# a quick look at what it adds for head 0, query at position 7
enc = LogDistanceBias(n_heads=n_heads, head_dim=d_model // n_heads, d_model=d_model)
positions = torch.arange(8)
print(enc.bias(positions, positions)[0, 7].numpy().round(3))

# %% [markdown]
# ## 2. Train it beside two built-ins
#
# Same model, task and training for every encoding; only `ModelConfig.encoding` changes. The task is
# character-level language modelling on CPython's help text (`chars`), trained at `seq_len` and
# evaluated on the validation split at `seq_len` and beyond.

# %%
task_config = TaskConfig("chars")
task = make_task(task_config)
encodings = ["log_distance", "rope", "alibi"]
train_config = TrainConfig(
    steps=steps,
    batch_size=batch_size,
    seq_len=seq_len,
    warmup_steps=max(1, steps // 10),
    checkpoint_every=max(1, steps // 4),
    seed=seed,
    device=device,
)
results = {}
for name in encodings:
    model_config = ModelConfig(
        vocab_size=task.vocab_size, n_layers=n_layers, n_heads=n_heads, d_model=d_model, encoding=name
    )
    results[name] = run(RunSpec(model=model_config, task=task_config, train=train_config), progress=False)
    r = results[name]
    print(f"{name:>13}: final training loss {r.history[-1]['loss']:.3f} "
          f"({'read from cache' if r.cached else 'trained'}, {r.model.num_parameters():,} parameters)")

# %% [markdown]
# ## 3. Evaluate at and beyond the training length

# %%
lengths = [seq_len * m for m in eval_multiples]
tokens = task.tokens("validation")
table = pd.concat(
    [lm_loss_at_lengths(results[name].model, tokens, lengths, max_windows=eval_windows).assign(encoding=name)
     for name in encodings],
    ignore_index=True,
)
table = table[["encoding", "length", "loss", "ppl", "n_tokens", "status"]]
atomic_write_text(results_dir() / f"{NOTEBOOK}.csv", table.to_csv(index=False))
table.pivot(index="length", columns="encoding", values="loss").round(3)

# %%
fig, ax = plt.subplots()
for name in encodings:
    rows = table[table.encoding == name]
    ax.plot(rows.length, rows.loss, marker="o", label=name, color=color_for(name))
ax.axvline(seq_len, color="0.5", linestyle=":", linewidth=1)
ax.set_xscale("log", base=2)
ax.set_xlabel("evaluation length (tokens)")
ax.set_ylabel("validation loss (nats / char)")
ax.set_title(f"Trained at {seq_len} tokens ({steps} steps, {profile} profile)")
ax.legend()
savefig(
    fig,
    "loss_vs_length",
    notebook=NOTEBOOK,
    caption=f"Template: validation loss vs evaluation length for an inline log-distance bias, RoPE and ALiBi "
    f"(chars task, trained at {seq_len} tokens, {profile} profile).",
)
plt.show()

# %%
best = table[table.length == max(lengths)].sort_values("loss").iloc[0]
print(f"At {max(lengths)} tokens ({max(lengths) // seq_len}x the training length) the lowest loss is "
      f"{best.encoding}'s: {best.loss:.3f} nats/char ({profile} profile; small models, one seed).")

# %% [markdown]
# ## Provenance
#
# Every notebook ends with this cell: the profile, the device actually used, the git commit, package
# versions and the time of the run that produced the outputs above.

# %%
provenance = show_provenance(
    profile, torch_device, steps=steps, batch_size=batch_size, seq_len=seq_len, d_model=d_model,
    n_layers=n_layers, n_heads=n_heads, seed=seed,
)
