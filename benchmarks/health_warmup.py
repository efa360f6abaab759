"""The collapse check's stretches on real runs: where pos and neg means are both near 1.

    python benchmarks/health_warmup.py RUN_DIR... [--tag raw]

For each run and tag, prints every stretch where scoreviz.health's collapse condition
holds for PERSIST records in a row (first and last step; "-" when it lasts to the
last record), the run's last step, its final kNN accuracy when recorded, and what
the health panel says. The warm-up rule of scoreviz/health.py (docs/health.md) is
justified with this table on the demo's runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv=None) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import scoreviz
    from scoreviz import health

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    args = parser.parse_args(argv)
    print("| run | tag | stretches (first-last step) | last step | final kNN % | health panel |")
    print("|---|---|---|---:|---:|---|")
    for path in args.runs:
        run = scoreviz.open_run(path)
        scalars = run.scalars()
        knn = scalars["knn_acc"].dropna() if "knn_acc" in scalars else None
        for tag in run.tags:
            scores = run.scores(tag)
            high = scores["pos_mean"] > health.COLLAPSE_MEAN
            both = high & (scores["neg_mean"] > health.COLLAPSE_MEAN)
            var = health.negative_variance(scores)
            mask = both | (high & (var < health.COLLAPSE_NEG_VAR)) if var is not None else both
            found = ", ".join(f"{a}-{'-' if b is None else b}" for a, b in health.stretches(mask)) or "none"
            flag = health.check_collapse(scores)
            final = f"{knn.iloc[-1]:.1f}" if knn is not None and len(knn) else ""
            print(f"| {run.name} | {tag} | {found} | {int(scores.index[-1])} | {final} | {flag.text()} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
