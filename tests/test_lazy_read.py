"""Reading only what a view needs: step ranges, columns and downsampling on read
(HDF5 hyperslabs), headers without data, and the app's bounded cache."""

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("torch")
import scoreviz  # noqa: E402
from scoreviz.store import select  # noqa: E402

from tests.sweep_runs import write_run  # noqa: E402


@pytest.fixture(scope="module")
def long_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("lazy")
    steps = np.arange(0, 3000, 3)  # 1000 rows, two interleaved tags
    return write_run(root / "long", {"moco_m": 0.99}, steps, np.sin(steps / 100.0), tags=("train", "ft"),
                     scalars={"loss": steps * 0.5, "lr": np.full(len(steps), 0.1)})


def test_options_select_the_same_rows_as_a_full_read(long_run):
    run = scoreviz.open_run(long_run)
    full = run.scores("ft")
    part = run.scores("ft", columns=["neg_mean", "pos_mean"], steps=(300, 1500))
    expected = full.loc[300:1500, ["neg_mean", "pos_mean"]]
    pd.testing.assert_frame_equal(part, expected)
    assert list(part.columns) == ["neg_mean", "pos_mean"]


def test_max_points_keeps_every_kth_step_and_the_last(long_run):
    run = scoreviz.open_run(long_run)
    full = run.scores("train")
    thin = run.scores("train", columns=["pos_mean"], max_points=100)
    assert len(thin) <= 100
    assert thin.index[0] == full.index[0] and thin.index[-1] == full.index[-1]
    np.testing.assert_array_equal(thin["pos_mean"].to_numpy(), full.loc[thin.index, "pos_mean"].to_numpy())
    gaps = np.diff(thin.index.to_numpy())[:-1]
    assert (gaps == gaps[0]).all()  # strided: evenly spaced steps before the last one


def test_histograms_and_scalars_take_the_same_options(long_run):
    run = scoreviz.open_run(long_run)
    steps, edges, counts = run.histograms("train", "neg")
    s2, e2, c2 = run.histograms("train", "neg", steps=(30, 90), max_points=3)
    assert list(s2) == [30, 63, 90]  # 21 steps: every 11th, then the last
    np.testing.assert_array_equal(c2, counts[np.isin(steps, s2)])
    np.testing.assert_array_equal(e2, edges)
    scalars = run.scalars(names=["loss"], steps=(None, 30))
    assert list(scalars.columns) == ["loss"] and list(scalars.index) == list(range(0, 31, 3))
    np.testing.assert_allclose(scalars["loss"], np.arange(0, 31, 3) * 0.5)
    assert run.scalars(names=["not logged"]).shape[1] == 0


def test_bad_options_are_scoreviz_errors(long_run):
    run = scoreviz.open_run(long_run)
    for kwargs in ({"max_points": 1}, {"max_points": "10"}, {"steps": (1.5, None)}, {"steps": 5},
                   {"columns": ["nope"]}):
        with pytest.raises(scoreviz.ScorevizError):
            run.scores("train", **kwargs)


def test_a_resumed_run_keeps_the_later_row_when_downsampled(tmp_path):
    from scoreviz.store import FILE_NAME, StoreWriter

    folder = write_run(tmp_path / "resumed", {}, np.arange(10), np.zeros(10))
    writer = StoreWriter(folder / FILE_NAME, 10, {}, {})  # resumes: steps 5..9 again, value 1
    stats = {c: np.ones(5) for c in scoreviz.store.STATS_COLUMNS}
    stats.update(pos_hist=np.zeros((5, 10), np.uint32), neg_hist=np.zeros((5, 10), np.uint32))
    writer.append_scores("train", np.arange(5, 10), stats)
    writer.close()
    run = scoreviz.open_run(folder)
    thin = run.scores("train", columns=["pos_mean"], max_points=4)
    pd.testing.assert_series_equal(thin["pos_mean"], run.scores("train").loc[thin.index, "pos_mean"])
    assert thin.loc[9, "pos_mean"] == 1.0


@pytest.mark.parametrize("rows", [[], [4], [2, 5, 8, 11], [2, 5, 8, 9], [0, 1, 700, 701, 1500], list(range(50))])
def test_read_rows_matches_numpy_indexing(tmp_path, rows):
    import h5py

    data = np.arange(2000 * 6, dtype=np.float64).reshape(2000, 6)
    with h5py.File(tmp_path / "x.h5", "w") as f:
        ds = f.create_dataset("x", data=data, chunks=(256, 6))
        np.testing.assert_array_equal(select.read_rows(ds, rows, [4, 1]), data[rows][:, [4, 1]])
        np.testing.assert_array_equal(select.read_rows(ds, rows), data[rows])
        np.testing.assert_array_equal(select.read_rows(ds, rows, []), data[rows][:, []])


def test_header_reads_names_and_counts_only(long_run):
    run = scoreviz.open_run(long_run, header=True)
    header = run.header
    assert header["tags"] == ["train", "ft"] and header["scalars"] == ["loss", "lr"]
    assert header["rows"]["scores"] == 2000 and header["last_step"] == 2997
