"""The cone FT falls into, drawn with the Curves view's figure function: for each run, the negative mean
of its scores, the uniformity and the effective rank of its embeddings, and its kNN accuracy, over steps.

    python docs/make_ft_figure.py "baseline=runs/demo/baseline" "FT from epoch 10 (the demo's)=runs/demo/ft" \
        "FT from step 0=runs/demo-ft0" --out docs/ft_cone_demo.png
    python docs/make_ft_figure.py "baseline=runs/ft-study/baseline-s0" "FT from step 0=runs/ft-study/both-e0-s0" \
        "FT from epoch 2=runs/ft-study/both-e2-s0" "FT from epoch 10=runs/ft-study/both-e10-s0" \
        --out docs/ft_cone_study.png

Each argument is LABEL=RUN_DIR (the label names the run in the legend and picks its colour, as the app
does from a run's name). Tag ``raw``: the scores and embeddings before FT, what the encoders make of the
images. The PNG goes through the app's own export (kaleido with the local Chromium).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

COLUMNS = ("neg_mean", "uniformity", "rank", "knn_acc")


def run_frame(run_dir: str, tag: str = "raw"):
    """One frame by step: the run's negative mean, uniformity, effective rank (per window) and kNN accuracy."""
    import pandas as pd

    import scoreviz

    run = scoreviz.open_run(run_dir)
    embeddings = run.embeddings(tag)
    return pd.concat([run.scores(tag)[["neg_mean"]], embeddings[["uniformity", "rank"]],
                      run.scalars()[["knn_acc"]]], axis=1).sort_index()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", metavar="LABEL=RUN_DIR")
    parser.add_argument("--out", required=True, help="the PNG to write")
    parser.add_argument("--title", default="Negative mean, uniformity and effective rank of the embeddings, and kNN "
                                           "accuracy (tag raw)")
    args = parser.parse_args(argv)

    from app.plot.lines import curves_figure
    from app.plot.palette import run_colors
    from app.shell import images

    reason = images.unavailable_reason()
    if reason:
        sys.exit(f"make_ft_figure.py: {reason}")
    frames = {}
    for item in args.runs:
        label, sep, run_dir = item.partition("=")
        if not sep:
            sys.exit(f"make_ft_figure.py: {item!r} is not LABEL=RUN_DIR")
        frames[label] = run_frame(run_dir)
    fig = curves_figure(frames, COLUMNS, title=args.title, colors=run_colors(frames), row_height=230)
    fig.update_layout(width=1100, legend=dict(orientation="h", y=-0.06, x=0))
    Path(args.out).write_bytes(images.to_image(fig.to_dict(), "png"))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
