"""Write the small run that tests/test_old_files.py opens, with an older scoreviz.

    git worktree add --detach /tmp/s1 9ced243   # scoreviz 0.1, schema 1
    git worktree add --detach /tmp/s2 3dd21c2   # schema 2
    python tests/data/make_old_run.py /tmp/s1 tests/data/schema1
    python tests/data/make_old_run.py /tmp/s2 tests/data/schema2

The run (20 steps, 16 bins, tags "raw" and "ft", two layers, loss and lr) is
written by the checkout given as the first argument, so the files hold exactly
what those versions wrote. The values follow from the step, so a test can
check every row after an upgrade: pos scores all equal 0.5 + step / 100 under
"raw" (0.4 + step / 100 under "ft"), negatives -step / 100, loss = step, every
gradient element = step.
"""

import shutil
import sys
from pathlib import Path

checkout, out = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()
sys.path.insert(0, str(checkout))

import torch  # noqa: E402

import scoreviz  # noqa: E402

assert Path(scoreviz.__file__).resolve().is_relative_to(checkout), scoreviz.__file__
shutil.rmtree(out, ignore_errors=True)
model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 2))
with scoreviz.Recorder(out, config={"made_by": str(checkout.name)}, bins=16) as rec:
    for step in range(20):
        rec.log_scores(step, torch.full((4,), 0.5 + step / 100), torch.full((4, 3), -step / 100), tag="raw")
        rec.log_scores(step, torch.full((4,), 0.4 + step / 100), torch.full((4, 3), -step / 100), tag="ft")
        for p in model.parameters():
            p.grad = torch.full_like(p, float(step))
        rec.log_gradients(step, model)
        rec.log_scalars(step, loss=float(step), lr=0.1)
for leftover in out.glob("scores.h5.lock"):
    leftover.unlink()
print(f"wrote {out / 'scores.h5'} ({(out / 'scores.h5').stat().st_size:,} bytes) with {checkout}")
