"""`scoreviz export --format parquet`: long tables that pivot back into the Run's frames."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

import scoreviz
from scoreviz import ScorevizError
from scoreviz.bridges.parquet import export_parquet

pytest.importorskip("pyarrow")


def record(run_dir, seed, steps, config):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    with scoreviz.Recorder(run_dir, config=config, bins=50, spectrum_window=3) as rec:
        for step in range(steps):
            z = torch.randn(32, 8)
            rec.log_embeddings(step, z, z + 0.1 * torch.randn(32, 8))
            rec.log_scores(step, torch.rand(32) * 0.5 + 0.5, torch.randn(32, 64) * 0.2)
            if step % 2:
                rec.log_scores(step, torch.rand(32) * 0.3 + 0.4, torch.randn(32, 16) * 0.1, tag="ft")
            model(torch.randn(3, 4)).sum().backward()
            rec.log_gradients(step, model)
            rec.log_scalars(step, loss=1.0 / (step + 1))
            if step % 3 == 0:
                rec.log_scalars(step, knn=0.5 + step / 100)
    return run_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    # two runs with the same folder name in different places: labelled by their paths below the common folder
    return [record(root / "baseline" / "run", 0, 10, {"m": 0.99, "ft": False}),
            record(root / "ft" / "run", 1, 7, {"m": 0.99, "ft": True, "alpha": [2.0, 1.6]})]


@pytest.fixture(scope="module")
def tables(runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("parquet")
    written = export_parquet(runs, out)
    assert [p.name for p in written] == ["scores.parquet", "histograms.parquet", "gradients.parquet",
                                         "scalars.parquet", "embeddings.parquet", "spectrum.parquet",
                                         "configs.parquet"]
    return {p.stem: pd.read_parquet(p) for p in written}


def test_scores_table_equals_run_scores(runs, tables):
    scores = tables["scores"]
    assert list(scores.columns) == ["run", "tag", "step", "kind", "statistic", "value"]
    assert sorted(scores["run"].unique()) == ["baseline/run", "ft/run"]
    for label, run_dir in zip(["baseline/run", "ft/run"], runs):
        run = scoreviz.open_run(run_dir)
        for tag in run.tags:
            mine = scores[(scores.run == label) & (scores.tag == tag)]
            column = np.where(mine.kind == "pair", mine.statistic, mine.kind + "_" + mine.statistic)
            wide = mine.assign(column=column).pivot(index="step", columns="column", values="value")
            expected = run.scores(tag)
            assert {"margin", "hard_frac"} <= set(expected.columns)
            pd.testing.assert_frame_equal(wide[expected.columns], expected, check_names=False)


def test_embeddings_and_spectrum_tables_equal_the_run(runs, tables):
    embeddings, spectra = tables["embeddings"], tables["spectrum"]
    assert list(embeddings.columns) == ["run", "tag", "step", "statistic", "value"]
    assert list(spectra.columns) == ["run", "tag", "step", "index", "eigenvalue"]
    for label, run_dir in zip(["baseline/run", "ft/run"], runs):
        run = scoreviz.open_run(run_dir)
        mine = embeddings[(embeddings.run == label) & (embeddings.tag == "train")]
        wide = mine.pivot(index="step", columns="statistic", values="value")
        expected = run.embeddings("train")
        pd.testing.assert_frame_equal(wide[expected.columns], expected.astype(np.float64), check_names=False)
        steps, eigenvalues = run.spectrum("train")
        # windows of 3 steps, and the last, shorter one at close()
        assert list(steps) == ([2, 5, 8, 9] if label == "baseline/run" else [2, 5, 6])
        mine = spectra[spectra.run == label].pivot(index="step", columns="index", values="eigenvalue")
        np.testing.assert_array_equal(mine.index, steps)
        np.testing.assert_allclose(mine.to_numpy(), eigenvalues)


def test_histograms_table_equals_run_histograms(runs, tables):
    hist = tables["histograms"]
    assert list(hist.columns) == ["run", "tag", "step", "kind", "bin", "bin_left", "bin_right", "count"]
    for label, run_dir in zip(["baseline/run", "ft/run"], runs):
        run = scoreviz.open_run(run_dir)
        for tag in run.tags:
            for kind in ("pos", "neg"):
                steps, edges, counts = run.histograms(tag, kind)
                mine = hist[(hist.run == label) & (hist.tag == tag) & (hist.kind == kind)]
                wide = mine.pivot(index="step", columns="bin", values="count")
                np.testing.assert_array_equal(wide.index, steps)
                np.testing.assert_array_equal(wide.to_numpy(), counts)
                one_step = mine[mine.step == steps[0]]
                np.testing.assert_array_equal(one_step.bin_left, edges[:-1])
                np.testing.assert_array_equal(one_step.bin_right, edges[1:])


def test_gradients_scalars_and_configs(runs, tables):
    grads, scalars, configs = tables["gradients"], tables["scalars"], tables["configs"]
    run = scoreviz.open_run(runs[1])
    mine = grads[grads.run == "ft/run"].pivot(index="step", columns="layer", values="value")
    pd.testing.assert_frame_equal(mine[run.layers], run.gradients(), check_names=False, check_dtype=False)  # float32 stored, float64 here
    np.testing.assert_array_equal(mine["(total)"], run.total_gradient_norm())
    mine = scalars[scalars.run == "ft/run"].pivot(index="step", columns="name", values="value")
    pd.testing.assert_frame_equal(mine[["loss", "knn"]], run.scalars(), check_names=False)
    assert mine["knn"].isna().sum() == 4  # every cell is a row, NaN where nothing was logged
    config = configs[(configs.run == "ft/run") & (configs.section == "config")]
    assert {k: json.loads(v) for k, v in zip(config.key, config.value)} == run.config
    env = configs[(configs.run == "ft/run") & (configs.section == "env")]
    assert json.loads(env[env.key == "torch"].value.iloc[0]) == torch.__version__


def test_pyarrow_reads_the_tables_with_their_types(tables, runs, tmp_path):
    import pyarrow.parquet as pq

    export_parquet(runs, tmp_path)
    schema = pq.read_schema(tmp_path / "histograms.parquet")
    assert str(schema.field("step").type) == "int64" and str(schema.field("count").type) == "int64"
    assert pq.read_table(tmp_path / "scores.parquet", filters=[("statistic", "=", "mean")]).num_rows == \
        int((tables["scores"].statistic == "mean").sum())


def test_existing_tables_are_not_overwritten_unless_asked(runs, tmp_path):
    export_parquet(runs[:1], tmp_path)
    with pytest.raises(ScorevizError, match="exists; add --force"):
        export_parquet(runs, tmp_path)
    export_parquet(runs, tmp_path, overwrite=True)
    assert pd.read_parquet(tmp_path / "scores.parquet").run.nunique() == 2
    assert not list(tmp_path.glob(".*.partial"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(ScorevizError, match="must be a folder"):
        export_parquet(runs, tmp_path / "file")


def test_bad_run_and_missing_pyarrow_are_clear_errors(runs, tmp_path, monkeypatch):
    with pytest.raises(ScorevizError, match="no such run"):
        export_parquet([tmp_path / "nope"], tmp_path / "out")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(ScorevizError, match=r"pip install 'scoreviz\[parquet\]'"):
        export_parquet(runs, tmp_path / "out")


def test_command_line(runs, tmp_path, python, subprocess_env):
    out = subprocess.run([python, "-m", "scoreviz.cli", "export", *map(str, runs), "--format", "parquet",
                          "--out", str(tmp_path)], env=subprocess_env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert str(tmp_path / "scores.parquet") in out.stdout
    assert pd.read_parquet(tmp_path / "scalars.parquet").run.nunique() == 2
