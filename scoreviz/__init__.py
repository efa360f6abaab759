"""scoreviz: see the learning dynamics of contrastive learning.

    rec = scoreviz.Recorder("runs/my-run", config=vars(args))
    rec.log_scores(step, pos, neg)          # cosine scores
    run = scoreviz.open_run("runs/my-run")  # pandas frames
    frame = scoreviz.open_runs("runs/", "neg_mean", where={"moco_m": 0.99})  # many runs, one long frame
"""

__version__ = "0.1.0"

from scoreviz.errors import ScorevizError  # noqa: E402
from scoreviz.recorder import Recorder  # noqa: E402
from scoreviz.run import Run, find_runs, open_run  # noqa: E402
from scoreviz.sweep import open_runs  # noqa: E402

__all__ = ["Recorder", "Run", "ScorevizError", "find_runs", "open_run", "open_runs", "__version__"]
