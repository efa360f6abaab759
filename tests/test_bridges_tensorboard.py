"""TensorBoard both ways: `scoreviz export --format tensorboard` and `scoreviz import-tensorboard`."""

import json
from collections import OrderedDict
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import numpy as np
import pytest
import torch

import scoreviz
from scoreviz import ScorevizError
from scoreviz.bridges.tensorboard import export_tensorboard, histogram_buckets
from scoreviz.bridges.tensorboard_import import import_tensorboard, rebin

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing import event_accumulator  # noqa: E402
from torch.utils.tensorboard import SummaryWriter  # noqa: E402

STEPS = 12


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """A run with two tags, an out-of-range score and a NaN, gradients and scalars."""
    run_dir = tmp_path_factory.mktemp("runs") / "moco"
    torch.manual_seed(0)
    # layer names whose model order is not their alphabetical order
    model = torch.nn.Sequential(OrderedDict(proj=torch.nn.Linear(4, 8), act=torch.nn.ReLU(), head=torch.nn.Linear(8, 2)))
    with pytest.warns(RuntimeWarning), scoreviz.Recorder(run_dir, config={"m": 0.99, "name": "moco"}) as rec:
        for step in range(STEPS):
            pos = (torch.rand(64) * 0.4 + 0.5 + 0.02 * step).clamp(max=1.0)
            neg = torch.randn(64, 200) * 0.2
            if step == 3:
                pos[0], neg[0, 0] = 1.5, float("nan")
            rec.log_scores(step, pos, neg)
            rec.log_scores(step, pos - 0.3, neg[:, :50], tag="ft")
            model(torch.randn(3, 4)).sum().backward()
            rec.log_gradients(step, model)
            rec.log_scalars(step, loss=1.0 / (step + 1), lr=0.03)
    return run_dir


def read_events(logdir):
    acc = event_accumulator.EventAccumulator(
        str(logdir), size_guidance={event_accumulator.HISTOGRAMS: 0, event_accumulator.SCALARS: 0,
                                    event_accumulator.TENSORS: 0})
    acc.Reload()
    return acc


def counts_on_our_bins(histo, edges):
    """Place a HistogramProto's bucket counts back on our bins by their right edges."""
    counts = np.zeros(len(edges) - 1)
    for limit, count in zip(histo.bucket_limit, histo.bucket):
        if count:
            counts[int(np.argmin(np.abs(edges[1:] - limit)))] += count
    return counts


def test_exported_histograms_read_back_with_tensorboards_reader_equal_ours(recorded, tmp_path):
    [folder] = export_tensorboard([recorded], tmp_path / "tb")
    assert folder == tmp_path / "tb" / "moco"
    acc = read_events(folder)
    run = scoreviz.open_run(recorded)
    for tag in ("train", "ft"):
        scores = run.scores(tag)
        for kind in ("pos", "neg"):
            steps, edges, counts = run.histograms(tag, kind)
            events = acc.Histograms(f"scores/{tag}/{kind}")
            assert [e.step for e in events] == list(steps)
            for event, ours, (_, row) in zip(events, counts, scores.iterrows()):
                h = event.histogram_value
                np.testing.assert_array_equal(counts_on_our_bins(h, edges), ours)
                assert h.num == row[f"{kind}_count"]
                assert h.min == row[f"{kind}_min"] and h.max == row[f"{kind}_max"]
                assert h.sum == pytest.approx(row[f"{kind}_mean"] * row[f"{kind}_count"], rel=1e-9, abs=1e-9)
                mean_square = row[f"{kind}_var"] + row[f"{kind}_mean"] ** 2
                assert h.sum_squares == pytest.approx(mean_square * row[f"{kind}_count"], rel=1e-9)
            # every statistic is a scalar too
            means = acc.Scalars(f"scores/{tag}/{kind}_mean")
            np.testing.assert_allclose([e.value for e in means], scores[f"{kind}_mean"], rtol=1e-6)
    assert acc.Scalars("scores/train/neg_nonfinite")[3].value == 1
    grads = run.gradients()
    for layer in run.layers:
        np.testing.assert_allclose([e.value for e in acc.Scalars(f"gradients/{layer}")], grads[layer], rtol=1e-6)
    assert len(acc.Scalars("gradients/(total)")) == STEPS
    np.testing.assert_allclose([e.value for e in acc.Scalars("scalars/loss")], run.scalars()["loss"], rtol=1e-6)


def test_histogram_buckets_frame_the_non_empty_bins():
    edges = np.linspace(-1, 1, 11)
    counts = np.array([0, 0, 3, 0, 5, 0, 0, 0, 0, 0])
    limits, buckets = histogram_buckets(counts, edges)
    # an empty bucket, the bins from the first to the last non-empty one with their right edges, an empty bucket
    np.testing.assert_allclose(limits, [-0.6, -0.4, -0.2, 0.0, 0.2])
    np.testing.assert_array_equal(buckets, [0, 3, 0, 5, 0])
    assert histogram_buckets(np.zeros(10), edges) is None
    limits, buckets = histogram_buckets(np.array([0] * 9 + [7]), edges)  # only the last bin: a frame beyond 1
    np.testing.assert_allclose(limits, [0.8, 1.0, 1.2])
    np.testing.assert_array_equal(buckets, [0, 7, 0])


def test_export_then_import_gives_the_run_back(recorded, tmp_path):
    export_tensorboard([recorded], tmp_path / "tb")
    [report] = import_tensorboard(tmp_path / "tb", tmp_path / "back")
    assert report.run_dir == tmp_path / "back" / "moco"
    original, back = scoreviz.open_run(recorded), scoreviz.open_run(report.run_dir)
    assert back.tags == original.tags and back.layers == original.layers == ["proj", "head"]
    assert back.config == original.config and back.bins == original.bins
    assert back.env["imported_from"] == str((tmp_path / "tb" / "moco").resolve())
    for tag in original.tags:
        a, b = original.scores(tag), back.scores(tag)
        assert list(a.columns) == list(b.columns)
        # moments from the histograms (doubles); nonfinite, out_of_range, neg_sample_var from float32 scalars
        np.testing.assert_allclose(b.to_numpy(), a.to_numpy(), rtol=1e-6, atol=1e-12)
        for kind in ("pos", "neg"):
            for x, y in zip(original.histograms(tag, kind), back.histograms(tag, kind)):
                np.testing.assert_array_equal(x, y)
    np.testing.assert_allclose(back.gradients().to_numpy(), original.gradients().to_numpy(), rtol=1e-6)
    np.testing.assert_allclose(back.total_gradient_norm(), original.total_gradient_norm(), rtol=1e-6)
    np.testing.assert_allclose(back.scalars().to_numpy(), original.scalars().to_numpy(), rtol=1e-6)  # float32 in TB


def test_add_histogram_log_imports_with_matching_counts_sums_and_means(tmp_path):
    rng = np.random.default_rng(0)
    writer = SummaryWriter(str(tmp_path / "logs" / "sim-run"))
    known = {}
    for step in range(0, 50, 10):
        pos = np.clip(rng.normal(0.7, 0.1, 500), -1, 1)
        neg = rng.normal(0.0, 0.25, 4000)  # a few beyond +-1
        weights = rng.normal(0.0, 0.5, 1000)
        writer.add_histogram("contrastive/pos", pos, step)
        writer.add_histogram("contrastive/neg", neg, step)
        writer.add_histogram("fc/weight", weights, step)
        writer.add_scalar("train/loss", 1.0 / (step + 1), step)
        known[step] = pos, neg, weights
    writer.close()

    [report] = import_tensorboard(tmp_path / "logs", tmp_path / "runs")
    run = scoreviz.open_run(tmp_path / "runs" / "sim-run")
    assert run.tags == ["contrastive", "fc/weight"]  # a pos/neg pair, and a histogram of its own
    assert report.tags["contrastive"] == {"pos": "contrastive/pos", "neg": "contrastive/neg"}
    scores, weights = run.scores("contrastive"), run.scores("fc/weight")
    assert list(scores.index) == list(known)
    for step, (pos, neg, w) in known.items():
        row = scores.loc[step]
        for kind, values in (("pos", pos), ("neg", neg)):
            assert row[f"{kind}_count"] == len(values)
            assert row[f"{kind}_mean"] == pytest.approx(values.mean(), abs=1e-12)
            assert row[f"{kind}_var"] == pytest.approx(values.var(), rel=1e-9)
            assert row[f"{kind}_min"] == values.min() and row[f"{kind}_max"] == values.max()
            assert np.isnan(row[f"{kind}_nonfinite"])  # TensorBoard does not keep it
        assert weights.loc[step, "neg_mean"] == pytest.approx(w.mean(), abs=1e-12)
        assert np.isnan(weights.loc[step, "pos_count"]) or weights.loc[step, "pos_count"] == 0
    for kind, index in (("pos", 0), ("neg", 1)):
        steps, edges, counts = run.histograms("contrastive", kind)
        for i, step in enumerate(steps):
            values = known[step][index]
            inside = np.abs(values) <= 1
            # every in-range value is in the histogram, the rest counted out of range (estimated where a bucket straddles 1)
            assert abs(counts[i].sum() - inside.sum()) <= 0.01 * len(values) + 1
            assert counts[i].sum() + scores.loc[step, f"{kind}_out_of_range"] == len(values)
            # torch's buckets are about 10% of |x| wide (0.07 at 0.7, against our 0.02): spread evenly
            # over our bins, the distribution stays within a few percent of the exact one
            exact = np.histogram(values[inside], bins=edges)[0]
            assert np.abs(np.cumsum(counts[i]) - np.cumsum(exact)).max() <= 0.05 * len(values)
            histogram_mean = (counts[i] @ (edges[:-1] + edges[1:]) / 2) / counts[i].sum()
            assert histogram_mean == pytest.approx(values[inside].mean(), abs=0.005)
    assert run.scalars()["train/loss"].to_numpy() == pytest.approx([1.0 / (s + 1) for s in known], rel=1e-6)


def test_tf2_histogram_tensors_import_with_estimated_moments(tmp_path):
    """TF2 writes histograms as (k, 3) tensors of left edge, right edge, count: no sums are kept."""
    from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboard.util import tensor_util

    rng = np.random.default_rng(1)
    values = rng.uniform(-0.5, 0.5, 3000)
    counts, edges = np.histogram(values, bins=30, range=(-0.6, 0.6))
    table = np.stack([edges[:-1], edges[1:], counts], axis=1)
    metadata = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name="histograms"))
    summary = Summary(value=[Summary.Value(tag="cos/neg", metadata=metadata,
                                           tensor=tensor_util.make_tensor_proto(table))])
    writer = SummaryWriter(str(tmp_path / "tf2"))
    writer.file_writer.add_summary(summary, global_step=7)
    writer.close()

    import_tensorboard(tmp_path / "tf2", tmp_path / "runs")
    run = scoreviz.open_run(tmp_path / "runs" / "tf2")
    row = run.scores("cos").loc[7]
    assert row["neg_count"] == 3000 and np.isnan(row["pos_mean"])
    assert row["neg_mean"] == pytest.approx(values.mean(), abs=0.01)
    assert row["neg_var"] == pytest.approx(values.var(), rel=0.02)
    assert row["neg_out_of_range"] == 0
    _, our_edges, ours = run.histograms("cos", "neg")
    assert ours[0].sum() == 3000 and ours[0][our_edges[1:] <= -0.6].sum() == 0


def test_rebin_puts_points_and_buckets_where_torch_histc_would():
    edges = np.linspace(-1, 1, 5)  # [-1, -0.5, 0, 0.5, 1]
    point = lambda x, n: (np.array([x]), np.array([x]), np.array([float(n)]))  # noqa: E731
    np.testing.assert_array_equal(rebin(*point(-1.0, 3), edges), [3, 0, 0, 0])   # the left edge: first bin
    np.testing.assert_array_equal(rebin(*point(1.0, 2), edges), [0, 0, 0, 2])    # the right edge: last bin, closed
    np.testing.assert_array_equal(rebin(*point(0.0, 4), edges), [0, 0, 4, 0])    # an inner edge: the bin to its right
    np.testing.assert_array_equal(rebin(*point(1.5, 4), edges), [0, 0, 0, 0])    # outside: left out
    # one bucket over [-0.75, 0.25] holding 10: spread evenly, whole counts keeping the total
    spread = rebin(np.array([-0.75]), np.array([0.25]), np.array([10.0]), edges)
    np.testing.assert_array_equal(spread, [3, 5, 2, 0])
    # a bucket straddling 1: the part beyond it is left out
    np.testing.assert_array_equal(rebin(np.array([0.5]), np.array([1.5]), np.array([10.0]), edges), [0, 0, 0, 5])


def test_import_errors_name_the_problem(tmp_path, recorded):
    with pytest.raises(ScorevizError, match="no such folder"):
        import_tensorboard(tmp_path / "missing", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ScorevizError, match="no TensorBoard event files"):
        import_tensorboard(tmp_path / "empty", tmp_path / "out")
    (tmp_path / "garbage").mkdir()
    (tmp_path / "garbage" / "events.out.tfevents.1.host").write_bytes(b"\x00not an event file" * 50)
    with pytest.raises(ScorevizError, match="events.out.tfevents.1.host: damaged event file: 0 event"):
        import_tensorboard(tmp_path / "garbage", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    export_tensorboard([recorded], tmp_path / "tb")
    import_tensorboard(tmp_path / "tb", tmp_path / "out")
    [again] = import_tensorboard(tmp_path / "tb", tmp_path / "out")  # the same import again keeps it
    assert again.already and "imported before from these event files, kept" in again.lines()[0]
    export_tensorboard([recorded], tmp_path / "tb2" / "other" / "x")
    (tmp_path / "tb2" / "other" / "x" / "moco").rename(tmp_path / "tb2" / "moco")
    with pytest.raises(ScorevizError, match="a run is already there"):  # another source at its place
        import_tensorboard(tmp_path / "tb2", tmp_path / "out")
    with pytest.raises(ScorevizError, match="--bins"):
        import_tensorboard(tmp_path / "tb", tmp_path / "other", bins=0)


def test_a_truncated_event_file_imports_with_partial_only(tmp_path):
    writer = SummaryWriter(str(tmp_path / "logs" / "killed"))
    for step in range(20):
        writer.add_histogram("s/neg", np.linspace(-0.5, 0.5, 100) + 0.01 * step, step)
    writer.close()
    [events] = list((tmp_path / "logs" / "killed").glob("*tfevents*"))
    events.write_bytes(events.read_bytes()[:-300])  # a writer killed mid-record
    with pytest.raises(ScorevizError, match=f"{events.name}: damaged event file: .* lost: .*truncated"):
        import_tensorboard(tmp_path / "logs", tmp_path / "runs")  # said, not imported in part silently
    assert not (tmp_path / "runs" / "killed").exists()
    [report] = import_tensorboard(tmp_path / "logs", tmp_path / "runs", partial=True)
    assert "damaged event file" in report.lost[0] and "left out (--partial)" in "\n".join(report.lines())
    steps = scoreviz.open_run(tmp_path / "runs" / "killed").scores("s").index
    assert 10 < len(steps) < 20 and list(steps) == list(range(len(steps)))


def test_export_refuses_to_mix_with_old_event_files(recorded, tmp_path):
    export_tensorboard([recorded], tmp_path / "tb")
    with pytest.raises(ScorevizError, match="already holds TensorBoard event files"):
        export_tensorboard([recorded], tmp_path / "tb")
    export_tensorboard([recorded], tmp_path / "tb", overwrite=True)
    assert len(list((tmp_path / "tb" / "moco").glob("*tfevents*"))) == 1
    with pytest.raises(ScorevizError, match="given twice"):
        export_tensorboard([recorded, recorded], tmp_path / "tb2")


def scoreviz_cli(python, env, *args):
    return subprocess.run([python, "-m", "scoreviz.cli", *args], env=env, capture_output=True, text=True, timeout=120)


def test_command_line_export_and_import(recorded, tmp_path, python, subprocess_env):
    out = scoreviz_cli(python, subprocess_env, "export", str(recorded), "--format", "tensorboard",
                       "--out", str(tmp_path / "tb"))
    assert out.returncode == 0, out.stderr
    assert str(tmp_path / "tb" / "moco") in out.stdout
    out = scoreviz_cli(python, subprocess_env, "import-tensorboard", str(tmp_path / "tb"), "--out", str(tmp_path / "runs"))
    assert out.returncode == 0, out.stderr
    assert "tag 'train': pos from 'scores/train/pos', neg from 'scores/train/neg'" in out.stdout
    assert scoreviz.open_run(tmp_path / "runs" / "moco").tags == ["train", "ft"]
    out = scoreviz_cli(python, subprocess_env, "import-tensorboard", str(tmp_path / "nowhere"))
    assert out.returncode == 1 and out.stderr.startswith("scoreviz: error: ") and out.stderr.count("\n") == 1
    out = scoreviz_cli(python, subprocess_env, "export", str(recorded), "--format", "tensorboard")
    assert out.returncode == 2 and "needs --out" in out.stderr


def test_help_imports_neither_tensorboard_nor_dash(python, subprocess_env):
    probe = ("import sys\nfrom scoreviz.cli import main\n"
             "try:\n    main(['import-tensorboard', '--help'])\nexcept SystemExit:\n    pass\n"
             "print(sorted(m for m in ('tensorboard', 'dash', 'transformers') if m in sys.modules))")
    out = subprocess.run([python, "-c", probe], env=subprocess_env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "usage: scoreviz import-tensorboard" in out.stdout
    assert out.stdout.strip().endswith("[]")


def test_missing_tensorboard_names_the_extra(recorded, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if not installed
    with pytest.raises(ScorevizError, match=r"pip install 'scoreviz\[tensorboard\]'"):
        export_tensorboard([recorded], tmp_path / "tb")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


@pytest.mark.slow
def test_tensorboard_server_shows_the_exported_histograms(recorded, tmp_path, python):
    export_tensorboard([recorded], tmp_path / "tb")
    port = free_port()
    server = subprocess.Popen(
        [python, "-m", "tensorboard.main", "--logdir", str(tmp_path / "tb"), "--host", "127.0.0.1",
         "--port", str(port), "--load_fast", "false", "--samples_per_plugin", "histograms=0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        tags = {}
        while time.time() < deadline and "scores/train/neg" not in tags.get("moco", {}):
            time.sleep(1)
            assert server.poll() is None, server.stdout.read()
            try:
                tags = get_json(f"{base}/data/plugin/histograms/tags")
            except OSError:
                continue
        assert "scores/train/neg" in tags["moco"] and "scores/ft/pos" in tags["moco"]
        query = urllib.parse.urlencode({"run": "moco", "tag": "scores/train/neg"})
        series = get_json(f"{base}/data/plugin/histograms/histograms?{query}")
        steps, edges, counts = scoreviz.open_run(recorded).histograms("train", "neg")
        assert [step for _, step, _ in series] == list(steps)
        for (_, step, buckets), ours in zip(series, counts):
            # TensorBoard shows our bins, the first one starting at min and the last ending at max
            shown = np.zeros(len(ours))
            for left, right, count in buckets:
                shown[np.searchsorted(edges, (left + right) / 2) - 1] += count
            np.testing.assert_array_equal(shown, ours)
        scalars = get_json(f"{base}/data/plugin/scalars/tags")
        assert "scores/train/neg_sample_var" in scalars["moco"] and "scalars/loss" in scalars["moco"]
    finally:
        server.terminate()
        server.wait(timeout=20)


def test_an_interrupted_import_leaves_no_run_behind(recorded, tmp_path, monkeypatch):
    from scoreviz.store import StoreWriter

    export_tensorboard([recorded], tmp_path / "tb")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(StoreWriter, "append_scalars", interrupted)
    with pytest.raises(KeyboardInterrupt):
        import_tensorboard(tmp_path / "tb", tmp_path / "runs")
    assert list((tmp_path / "runs").iterdir()) == []  # no run, no empty folder, no temporary folder
    monkeypatch.undo()
    import_tensorboard(tmp_path / "tb", tmp_path / "runs")  # and the same import then works
    assert scoreviz.open_run(tmp_path / "runs" / "moco").tags == ["train", "ft"]


@pytest.mark.slow
def test_two_imports_into_the_same_folder_at_once(recorded, tmp_path, python, subprocess_env):
    export_tensorboard([recorded], tmp_path / "tb")
    command = [python, "-m", "scoreviz.cli", "import-tensorboard", str(tmp_path / "tb"), "--out", str(tmp_path / "runs")]
    first, second = (subprocess.Popen(command, env=subprocess_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True) for _ in range(2))
    results = [(p.wait(timeout=120), p.stderr.read()) for p in (first, second)]
    codes = sorted(code for code, _ in results)
    # one writes the run; the other is told, or, if it looked after the run was there, keeps it
    assert codes in ([0, 1], [0, 0]), results
    for code, err in results:
        if code:
            assert "a run is already there" in err or "a run appeared there" in err
    run = scoreviz.open_run(tmp_path / "runs" / "moco")
    assert run.tags == ["train", "ft"] and len(run.scores("train")) == STEPS
    assert [p.name for p in (tmp_path / "runs" / "moco").iterdir()] == ["scores.h5"]
