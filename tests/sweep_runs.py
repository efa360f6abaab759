"""Small runs with known values, written through the real store writer (no torch loop),
for the tests of lazy reading, grouping, open_runs and several run folders."""

from pathlib import Path

import numpy as np

from scoreviz.store import FILE_NAME, STATS_COLUMNS, StoreWriter

BINS = 10


def write_run(folder, config, steps, values, tags=("train",), scalars=None, hist_bin=None):
    """A run whose every score statistic of every tag at ``steps[i]`` is ``values[i]`` (pos_mean,
    neg_mean, ...), with histograms of 4 positives / 8 negatives all in bin ``hist_bin[i]``
    (default i % BINS), and ``scalars`` {name: values} at the same steps."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    steps = np.asarray(steps, dtype=np.int64)
    values = np.asarray(values, dtype=np.float64)
    bins = np.arange(len(steps)) % BINS if hist_bin is None else np.asarray(hist_bin)
    writer = StoreWriter(folder / FILE_NAME, BINS, config, {"test": True})
    try:
        for offset, tag in enumerate(tags):
            stats = {c: values + offset for c in STATS_COLUMNS}
            for kind, count in (("pos", 4), ("neg", 8)):
                hist = np.zeros((len(steps), BINS), dtype=np.uint32)
                hist[np.arange(len(steps)), bins] = count
                stats[f"{kind}_hist"] = hist
            writer.append_scores(tag, steps, stats)
        if scalars:
            names = list(scalars)
            writer.append_scalars(steps, names, np.stack([np.asarray(scalars[n], float) for n in names], axis=1))
    finally:
        writer.close()
    return folder
