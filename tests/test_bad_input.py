"""Bad input gets a ScorevizError naming the file and the problem, raised fast, never a deep traceback."""

import json

import h5py
import numpy as np
import pytest
import torch

from scoreviz import Recorder, ScorevizError, open_run

pytestmark = pytest.mark.timeout(30)  # a reader must never hang on a damaged file


@pytest.fixture
def recorded(tmp_path):
    run_dir = tmp_path / "good"
    model = torch.nn.Linear(4, 2)
    model(torch.randn(2, 4)).sum().backward()
    with Recorder(run_dir, config={"m": 0.9}) as rec:
        for step in range(300):
            rec.log_scores(step, torch.rand(8), torch.rand(8, 64) * 2 - 1)
            rec.log_gradients(step, model)
            rec.log_scalars(step, loss=1.0 / (step + 1))
    return run_dir


def read_everything(run):
    for tag in run.tags:
        run.scores(tag)
        run.histograms(tag, "pos")
        run.histograms(tag, "neg")
    run.gradients()
    run.total_gradient_norm()
    run.scalars()
    run.summary()


def test_a_missing_path(tmp_path):
    with pytest.raises(ScorevizError, match="no such run"):
        open_run(tmp_path / "nope")


def test_a_folder_without_a_run(tmp_path):
    with pytest.raises(ScorevizError, match="not a scoreviz run"):
        open_run(tmp_path)


def test_a_zero_byte_file(tmp_path):
    (tmp_path / "scores.h5").write_bytes(b"")
    with pytest.raises(ScorevizError, match=r"scores\.h5: empty file"):
        open_run(tmp_path)


def test_a_file_that_is_not_hdf5(tmp_path):
    (tmp_path / "scores.h5").write_text("step,loss\n0,1.0\n")
    with pytest.raises(ScorevizError, match=r"scores\.h5: not an HDF5 file"):
        open_run(tmp_path)


def test_a_foreign_hdf5_file(tmp_path):
    with h5py.File(tmp_path / "scores.h5", "w") as f:
        f["data"] = np.arange(10)
    with pytest.raises(ScorevizError, match=r"scores\.h5: an HDF5 file, but not a scoreviz run"):
        open_run(tmp_path)


def test_a_newer_schema(recorded):
    with h5py.File(recorded / "scores.h5", "r+") as f:
        f.attrs["scoreviz_schema"] = 99
    with pytest.raises(ScorevizError, match="newer scoreviz"):
        open_run(recorded)
    with pytest.raises(ScorevizError, match="newer scoreviz"):
        Recorder(recorded)  # nor is it appended to


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.9])
def test_a_truncated_file(recorded, keep):
    path = recorded / "scores.h5"
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])
    with pytest.raises(ScorevizError, match=r"scores\.h5: truncated or damaged"):
        run = open_run(recorded)
        read_everything(run)


def test_damaged_bytes_inside_the_file(recorded):
    path = recorded / "scores.h5"
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(0)
    for start in rng.integers(len(data) // 4, len(data), size=20):
        data[start:start + 64] = rng.integers(0, 256, size=64, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    try:
        read_everything(open_run(recorded))
    except ScorevizError as err:  # damaged or not, only ever a ScorevizError naming the file
        assert "scores.h5" in str(err)


def test_a_config_that_is_not_json(recorded):
    with h5py.File(recorded / "scores.h5", "r+") as f:
        f.attrs["config"] = "{not json"
    with pytest.raises(ScorevizError, match="config"):
        open_run(recorded)


def test_unknown_tag_and_kind(recorded):
    run = open_run(recorded)
    with pytest.raises(ScorevizError, match="no scores under tag 'ft'"):
        run.scores("ft")
    with pytest.raises(ScorevizError, match="kind must be"):
        run.histograms("train", "both")


def test_the_recorder_refuses_a_foreign_file_and_keeps_it(tmp_path):
    with h5py.File(tmp_path / "scores.h5", "w") as f:
        f["data"] = np.arange(10)
    with pytest.raises(ScorevizError, match="not a scoreviz run"):
        Recorder(tmp_path)
    with h5py.File(tmp_path / "scores.h5", "r") as f:
        assert list(f["data"][:]) == list(range(10))


def test_appending_with_other_bins_is_refused_and_loses_nothing(recorded):
    with pytest.raises(ScorevizError, match="100 histogram bins"):
        Recorder(recorded, bins=50)
    assert len(open_run(recorded).scores("train")) == 300


def test_a_run_dir_that_cannot_be_created(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ScorevizError, match="cannot create the run folder"):
        Recorder(blocker / "run")


def test_the_config_attribute_is_plain_json(recorded):
    """Others can read runs without scoreviz: config and env are JSON strings."""
    with h5py.File(recorded / "scores.h5", "r", swmr=True) as f:
        assert json.loads(f.attrs["config"]) == {"m": 0.9}
        assert "torch" in json.loads(f.attrs["env"])
