"""Write the small run that tests/test_old_files.py opens, with an older scoreviz.

    git worktree add --detach /tmp/s1 9ced243   # scoreviz 0.1, schema 1
    git worktree add --detach /tmp/s2 3dd21c2   # schema 2
    git worktree add --detach /tmp/s3 d4d5cfd   # schema 3 (embeddings and spectra, no window signals)
    python tests/data/make_old_run.py /tmp/s1 tests/data/schema1
    python tests/data/make_old_run.py /tmp/s2 tests/data/schema2
    python tests/data/make_old_run.py /tmp/s3 tests/data/schema3

The run (20 steps, 16 bins, tags "raw" and "ft", two layers, loss and lr) is
written by the checkout given as the first argument, so the files hold exactly
what those versions wrote. The values follow from the step, so a test can
check every row after an upgrade: pos scores all equal 0.5 + step / 100 under
"raw" (0.4 + step / 100 under "ft"), negatives -step / 100, loss = step, every
gradient element = step. A version with log_embeddings (schema 3) also logs `views(step)`
under "train" at every step, in spectrum windows of 5 steps (spectra at steps 4, 9, 14, 19).
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
embeddings = hasattr(scoreviz.Recorder, "log_embeddings")
options = {"spectrum_window": 5} if embeddings else {}


def views(step):
    """Two views of 8 embeddings of dim 4, fixed by the step."""
    g = torch.Generator().manual_seed(step)
    z = torch.randn(8, 4, generator=g)
    return z, z + 0.1 * torch.randn(8, 4, generator=g)


with scoreviz.Recorder(out, config={"made_by": str(checkout.name)}, bins=16, **options) as rec:
    for step in range(20):
        rec.log_scores(step, torch.full((4,), 0.5 + step / 100), torch.full((4, 3), -step / 100), tag="raw")
        rec.log_scores(step, torch.full((4,), 0.4 + step / 100), torch.full((4, 3), -step / 100), tag="ft")
        for p in model.parameters():
            p.grad = torch.full_like(p, float(step))
        rec.log_gradients(step, model)
        rec.log_scalars(step, loss=float(step), lr=0.1)
        if embeddings:
            rec.log_embeddings(step, *views(step))
for leftover in out.glob("scores.h5.lock"):
    leftover.unlink()
print(f"wrote {out / 'scores.h5'} ({(out / 'scores.h5').stat().st_size:,} bytes) with {checkout}")
