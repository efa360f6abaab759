"""W&B reads scoreviz's TensorBoard export as histograms with our bins and counts (offline, no server).

The docs (docs/integrations.md) tell W&B users to export to TensorBoard inside a run
started with `wandb.init(sync_tensorboard=True)`; this test runs that snippet. Here that run is offline: W&B
writes what it would upload into its local `.wandb` file, which is read back.
"""

import struct
import time

import numpy as np
import pytest
import torch

import scoreviz
from test_docs import ROOT, blocks

wandb = pytest.importorskip("wandb")
pytest.importorskip("tensorboard")

pytestmark = pytest.mark.slow


def wandb_records(path):
    """The records of a .wandb file: W&B's 7-byte header, then LevelDB-log blocks of protobuf Records."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    block, position, pending, records = 32768, 7, b"", []
    while position + 7 <= len(data):
        room = block - position % block
        if room < 7:  # a block's tail too short for a chunk header is padding
            position += room
            continue
        _, length, kind = struct.unpack("<IHB", data[position:position + 7])
        position += 7
        if kind == 0 and length == 0:
            position += room - 7
            continue
        pending += data[position:position + length]
        position += length
        if kind in (1, 4):  # a whole record, or the last chunk of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def finished_records(wandb_dir, timeout=60):
    """The offline run's records once W&B has written its exit record (it writes after finish() returns)."""
    deadline = time.time() + timeout
    while True:
        paths = list(wandb_dir.glob("wandb/offline-run-*/run-*.wandb"))
        try:
            records = wandb_records(paths[0]) if paths else []
        except Exception:  # a record still being written
            records = []
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.time() > deadline:
            return records
        time.sleep(0.5)


def test_wandb_sync_tensorboard_shows_our_histograms(tmp_path, monkeypatch):
    import json

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    torch.manual_seed(0)
    with scoreviz.Recorder(tmp_path / "runs" / "a") as rec:
        for step in range(5):
            rec.log_scores(step, torch.rand(64) * 0.3 + 0.6, torch.randn(64, 128) * 0.2)

    # the documentation's W&B snippet, run as it is written (tests/test_docs.py leaves it to this test)
    [snippet] = [code for _, _, code, fixture in blocks(ROOT / "docs" / "integrations.md") if fixture == "wandb"]
    monkeypatch.chdir(tmp_path)
    exec(compile(snippet, "docs/integrations.md", "exec"), {})

    records = finished_records(tmp_path)
    histograms = {}  # (kind, step) -> (bins, values)
    for record in records:
        if record.WhichOneof("record_type") != "history":
            continue
        items = {tuple(i.nested_key) or (i.key,): json.loads(i.value_json) for i in record.history.item}
        for kind in ("pos", "neg"):
            key = f"scores/train/{kind}"
            if (key, "bins") in items:
                assert items[(key, "_type")] == "histogram"
                histograms[kind, items[("global_step",)]] = (items[(key, "bins")], items[(key, "values")])
    run = scoreviz.open_run(tmp_path / "runs" / "a")
    for kind in ("pos", "neg"):
        steps, edges, counts = run.histograms("train", kind)
        assert sorted(step for k, step in histograms if k == kind) == list(steps)
        for step, ours in zip(steps, counts):
            bins, values = histograms[kind, step]
            first = int(np.flatnonzero(ours)[0])
            # W&B's bins are ours, from the first non-empty bin on, with our counts
            np.testing.assert_allclose(bins, edges[first:first + len(bins)], atol=1e-9)
            np.testing.assert_array_equal(values, ours[first:first + len(values)])
            assert sum(values) == ours.sum()
