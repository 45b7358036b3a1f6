"""Do two runs of a profile reach the same conclusions? Compare two ``results/`` folders.

Issue "Experiments that measure what they claim", item 6: a cold run on another machine (another
thread count, another float rounding) must give the same gate decisions, audit verdicts and resolved
orderings; an ordering that flips between reruns is unresolved, not a finding. Run the profile twice
(the second in a sandbox, e.g. with ``cpu_threads`` changed), then::

    python benchmarks/rerun_stability.py results /tmp/rerun/res [--profile default]

It reports, from each folder's tables (read with ``ropelib.results.read_table``):

* gates (``04_gates``): models whose pass/fail differs; the largest relative drift of a language
  model's test perplexity and the largest absolute drift of a retrieval accuracy;
* audit (``07_claims``): claims whose verdict differs;
* orderings (``05_orderings``): published orderings whose ``reproduced`` differs (True / False /
  not testable).

The last line is ``SUMMARY gate_flips=… verdict_flips=… ordering_flips=… max_ppl_drift=…
max_accuracy_drift=…``. Exit status 0 whatever the differences (they are findings to report, not
errors); 2 when a folder or table is missing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ropelib.results import read_table  # noqa: E402

MODEL_KEY = ["encoding", "task", "seed"]
ORDERING_KEY = ["source", "comparison", "multiplier", "metric"]


def _label(value: object) -> str:
    """``reproduced`` as a word: True, False or not testable (NaN)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "not testable"
    return "yes" if str(value).lower() in ("true", "1", "1.0") else "no"


def compare(a: Path, b: Path, profile: str) -> dict[str, pd.DataFrame | float]:
    """The differences between the runs behind results folders ``a`` and ``b`` (see the module docstring)."""
    ga, gb = (read_table("04_gates", d, profile) for d in (a, b))
    gates = ga.merge(gb, on=MODEL_KEY, suffixes=("_a", "_b"), how="outer", indicator=True)
    gate_flips = gates[(gates._merge != "both") | (gates.passed_a.astype(str) != gates.passed_b.astype(str))]
    lm = gates[gates.kind_a == "lm"]
    ppl_drift = float((lm.ppl_b / lm.ppl_a - 1).abs().max()) if len(lm) else float("nan")
    ret = gates[gates.kind_a == "retrieval"]
    acc_drift = float((ret.accuracy_b - ret.accuracy_a).abs().max()) if len(ret) else float("nan")

    ca, cb = (read_table("07_claims", d, profile) for d in (a, b))
    claims = ca.merge(cb, on="claim_id", suffixes=("_a", "_b"), how="outer")
    verdict_flips = claims[claims.verdict_a.astype(str) != claims.verdict_b.astype(str)]

    oa, ob = (read_table("05_orderings", d, profile) for d in (a, b))
    orderings = oa.merge(ob, on=ORDERING_KEY, suffixes=("_a", "_b"), how="outer")
    orderings["a"] = orderings.reproduced_a.map(_label)
    orderings["b"] = orderings.reproduced_b.map(_label)
    ordering_flips = orderings[orderings.a != orderings.b]
    return {
        "gate_flips": gate_flips[MODEL_KEY + ["passed_a", "passed_b"]],
        "verdict_flips": verdict_flips[["claim_id", "verdict_a", "verdict_b"]],
        "ordering_flips": ordering_flips[
            ORDERING_KEY + ["a", "b", "better_value_a", "better_value_b", "worse_value_a", "worse_value_b"]
        ],
        "n_models": float(len(gates)),
        "n_claims": float(len(claims)),
        "n_orderings": float(len(orderings)),
        "n_testable_orderings": float(((orderings.a != "not testable") & (orderings.b != "not testable")).sum()),
        "max_ppl_drift": ppl_drift,
        "max_accuracy_drift": acc_drift,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("first", type=Path, help="results folder of one run (e.g. results)")
    parser.add_argument("second", type=Path, help="results folder of the rerun")
    parser.add_argument("--profile", default="default", help="profile whose rows are compared (default: default)")
    args = parser.parse_args(argv)
    for d in (args.first, args.second):
        if not d.is_dir():
            parser.error(f"{d} is not a folder of results")
    try:
        out = compare(args.first, args.second, args.profile)
    except (FileNotFoundError, ValueError) as exc:
        parser.error(str(exc))
    pd.set_option("display.width", 200)
    for name in ("gate_flips", "verdict_flips", "ordering_flips"):
        df = out[name]
        print(f"== {name.replace('_', ' ')}: {len(df)}")
        if len(df):
            print(df.to_string(index=False))
    print(
        f"models {out['n_models']:.0f}, claims {out['n_claims']:.0f}, orderings {out['n_orderings']:.0f} "
        f"({out['n_testable_orderings']:.0f} testable in both runs)"
    )
    print(
        f"SUMMARY gate_flips={len(out['gate_flips'])} verdict_flips={len(out['verdict_flips'])} "
        f"ordering_flips={len(out['ordering_flips'])} max_ppl_drift={out['max_ppl_drift']:.4f} "
        f"max_accuracy_drift={out['max_accuracy_drift']:.4f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
