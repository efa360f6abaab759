"""Runs recorded by older scoreviz versions (schema 1: scoreviz 0.1; schema 2; schema 3) open, and
recording into them upgrades them to the current schema without losing a row.

The files in tests/data were written by those versions themselves (see
tests/data/make_old_run.py for how, and for the values each row holds).
"""

import shutil
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from scoreviz import Recorder, ScorevizError, open_run
from scoreviz.store import SCHEMA_VERSION, STATS_COLUMNS

DATA = Path(__file__).parent / "data"
STEPS = np.arange(20)


@pytest.fixture(params=[1, 2, 3], ids=["schema 1", "schema 2", "schema 3"])
def old_run(request, tmp_path):
    run_dir = tmp_path / f"schema{request.param}"
    shutil.copytree(DATA / f"schema{request.param}", run_dir)
    with h5py.File(run_dir / "scores.h5", "r") as f:
        assert f.attrs["scoreviz_schema"] == request.param
    return run_dir


def check_old_rows(run):
    """Every row the old version wrote, at its step with its values."""
    assert run.tags[:2] == ["raw", "ft"] and run.layers[:2] == ["0", "1"]
    for tag, base in (("raw", 0.5), ("ft", 0.4)):
        scores = run.scores(tag).loc[STEPS]
        np.testing.assert_allclose(scores["pos_mean"], base + STEPS / 100, atol=1e-6)
        np.testing.assert_allclose(scores["neg_mean"], -STEPS / 100, atol=1e-6)
        assert (scores["pos_count"] == 4).all() and (scores["neg_count"] == 12).all()
        assert run.histograms(tag, "pos")[2].sum(axis=1)[:20].tolist() == [4] * 20
    np.testing.assert_allclose(run.scalars()["loss"].loc[STEPS], STEPS)
    np.testing.assert_allclose(run.gradients()["0"].loc[STEPS], STEPS * np.sqrt(8), rtol=1e-5)


def test_an_old_file_opens_with_the_new_streams_empty(old_run):
    run = open_run(old_run)
    check_old_rows(run)
    scores = run.scores("raw")
    assert list(scores.columns[-2:]) == ["margin", "hard_frac"] and set(STATS_COLUMNS) <= set(scores.columns)
    assert list(run.steps()) == list(STEPS)
    if run_schema(old_run) >= 3:
        return  # its embeddings: test_a_schema_3_file_reads_its_spectra_without_the_window_signals
    assert scores["margin"].isna().all()  # not recorded by those versions
    assert run.embedding_tags == []
    with pytest.raises(ScorevizError, match="no embeddings under tag 'train'; tags: \\[\\]"):
        run.embeddings()
    assert run.summary()["embedding tags"] == []


def run_schema(run_dir):
    with h5py.File(run_dir / "scores.h5", "r") as f:
        return int(f.attrs["scoreviz_schema"])


def test_a_schema_3_file_reads_its_spectra_without_the_window_signals():
    """Its embeddings and spectra as recorded; the window signals it lacks read as NaN, at its windows."""
    run = open_run(DATA / "schema3")
    frame = run.embeddings()
    assert list(frame.index) == list(STEPS) and frame["std"].notna().all()
    windows = frame["rank"].dropna()
    assert list(windows.index) == [4, 9, 14, 19] and (windows > 1).all()
    assert list(run.spectrum()[0]) == [4, 9, 14, 19]
    signals = ["alpha_req", "alpha_req_r2", "nesum", "participation_ratio", "w2_uniformity", "lidar", "lidar_pairs",
               "windows_dropped"]
    assert set(signals) <= set(frame.columns) and frame[signals].isna().all().all()


def test_recording_into_an_old_file_upgrades_it_and_keeps_every_row(old_run):
    with Recorder(old_run, bins=16, spectrum_window=2) as rec:
        for step in (20, 21):
            rec.log_scores(step, torch.full((4,), 0.7), torch.rand(4, 3) - 1, tag="raw")
            rec.log_embeddings(step, torch.randn(8, 4), torch.randn(8, 4))  # dim 4: the schema 3 run's
    with h5py.File(old_run / "scores.h5", "r") as f:
        assert f.attrs["scoreviz_schema"] == SCHEMA_VERSION
        assert f["committed"].shape == (5, 2)
    run = open_run(old_run)
    check_old_rows(run)
    scores = run.scores("raw")
    assert list(scores.index) == list(range(22))
    assert scores["margin"].loc[[20, 21]].notna().all()
    embeddings = run.embeddings()
    if run_schema(DATA / old_run.name) < 3:
        assert scores["margin"].loc[STEPS].isna().all()
    if run_schema(DATA / old_run.name) == 3:  # its own rows kept; the new window has its signals, the old ones NaN
        assert list(embeddings.index) == list(range(22)) and list(run.spectrum()[0]) == [4, 9, 14, 19, 21]
        assert embeddings["nesum"].loc[[4, 9, 14, 19]].isna().all() and embeddings["nesum"].loc[21] > 1
    else:
        assert list(embeddings.index) == [20, 21] and list(run.spectrum()[0]) == [21]
    assert run.config["made_by"] in ("s1", "s2", "numbers_s3")  # the old header is kept


def test_recording_into_an_old_file_needs_its_bins(old_run):
    before = (old_run / "scores.h5").read_bytes()
    with pytest.raises(ScorevizError, match="recorded with 16 histogram bins"):
        Recorder(old_run)
    assert (old_run / "scores.h5").read_bytes() == before


def test_a_rebuilt_file_keeps_every_embedding_and_spectrum_row(tmp_path):
    """The rebuild that upgrades old files (and rescues files a killed writer left open) copies the
    new streams too, also spectra of two dims in one table (tags of two dims, the second added by a
    resumed run), with their window signals."""
    from scoreviz.store import StoreReader
    from scoreviz.store.writer import rebuild

    for dim, steps in ((6, range(0, 6)), (9, range(6, 12))):
        with Recorder(tmp_path, spectrum_window=3) as rec:
            for step in steps:
                rec.log_embeddings(step, torch.randn(16, dim), torch.randn(16, dim), tag=f"dim{dim}")
                rec.log_scores(step, torch.rand(16), torch.rand(16, 4))
    before = open_run(tmp_path)
    frames = {tag: before.embeddings(tag) for tag in ("dim6", "dim9")}
    spectra = {tag: before.spectrum(tag) for tag in ("dim6", "dim9")}
    assert spectra["dim6"][1].shape == (2, 6) and spectra["dim9"][1].shape == (2, 9)
    assert frames["dim9"]["lidar"].notna().sum() == 2
    rebuild(tmp_path / "scores.h5", StoreReader(tmp_path / "scores.h5"))
    after = open_run(tmp_path)
    for tag in ("dim6", "dim9"):
        pd.testing.assert_frame_equal(after.embeddings(tag), frames[tag])
        np.testing.assert_array_equal(after.spectrum(tag)[0], spectra[tag][0])
        np.testing.assert_array_equal(after.spectrum(tag)[1], spectra[tag][1])
    pd.testing.assert_frame_equal(after.scores(), before.scores())
