"""ropelib: rotary positional embeddings and their rivals, tested against the reference implementations.

Submodules (one concept each):

* the models: ``rope_scaling`` (RoPE configs, one record per scaling type, config -> frequencies), ``rope``
  (the rotation: cos/sin tables, kernels, the ``RoPE`` module), ``encodings`` (every positional encoding behind one
  interface), ``model`` (toy transformer; ``resolve_device``: a run's device, resolved once), ``data``
  (tasks, corpora and the seeded batch generators), ``train``, ``runs`` (cached, resumable runs and sweeps),
  ``fingerprint`` (the training code in every run hash), ``sdpa_backends`` (which SDPA kernel each
  encoding's attention runs on);
* evaluation and protocols: ``evaluate``, ``memo`` (the evaluation cache), ``base_models`` (the base
  models of notebooks 04-06), ``protocols`` (learning-rate sweeps, gates' inputs, 04's checks), ``gates``,
  ``ngram`` (n-gram baselines), ``stats`` (intervals, paired ratios, orderings), ``extrapolation`` (05),
  ``context_extension`` (06),
  ``rope_variants``, ``attention_stats`` and ``length_sweep`` (08), ``ablation``;
* results and the audit: ``results`` (table schemas), ``published`` (published numbers), ``audit`` (the
  audit machinery of notebook 07), ``evidence`` (the gated numbers it reads), ``claims`` (the claims,
  with ``claims_extrapolation``, ``claims_long_context``, ``claims_in_distribution``);
* closed forms and references: ``analysis``, ``published_rope`` (published RoPE settings);
* output: ``plotting`` (shared style and ``savefig``), ``gallery`` (figure gallery and HTML pages),
  ``provenance``, ``paths``;
* the notebook pipeline behind ``run_all.py`` (nothing above imports it): ``pipeline`` (a run and the
  command line), ``profiles`` (``profiles.yaml`` and the parameter checks), ``notebook_files`` (discovery,
  the jupytext pair), ``output_trees`` (where a run writes, its lock and manifest), ``notebook_runs`` (one
  notebook's run, committed as one set), ``process_tree`` (its processes), ``run_progress`` (progress lines
  and estimates), ``fork`` (``--new``), ``run_messages`` (errors, exit codes, line formatting).
"""

__version__ = "0.1.0"
