"""scoreviz: see the learning dynamics of contrastive learning.

    rec = scoreviz.Recorder("runs/my-run", config=vars(args))
    rec.log_scores(step, pos, neg)          # cosine scores
    run = scoreviz.open_run("runs/my-run")  # pandas frames
"""

__version__ = "0.1.0"

from scoreviz.errors import ScorevizError  # noqa: E402
from scoreviz.recorder import Recorder  # noqa: E402
from scoreviz.run import Run, find_runs, open_run  # noqa: E402

__all__ = ["Recorder", "Run", "ScorevizError", "find_runs", "open_run", "__version__"]
