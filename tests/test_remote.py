"""Recording to and reading from S3: moto's S3 server on 127.0.0.1 (tests/s3_server.py), s3fs
pointed at it. Nothing here talks to anything but 127.0.0.1.

What must hold (README, "On a cluster or in the cloud" and "What scoreviz guarantees"): a run
recorded to s3:// reads as the same run recorded locally, frame by frame; kill -9 loses at most
the rows not yet published and a new Recorder publishes what the killed one left; a second
writer is refused and the first's rows stay whole; a store that stops answering for 30 s never
stops or slows the loop, and every step arrives once it is back; bad credentials and a missing
bucket are one-line errors at Recorder(); no secret is ever printed or written; under torchrun
only rank 0 publishes; a sweep under one prefix reads as one, grouped by config.
"""

import json
import os
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

import s3_server
from faults import check_rows, drain, last_flushed, report, start_writer, wait_for
from scoreviz import Recorder, ScorevizError, find_runs, open_run, open_runs

pytestmark = pytest.mark.timeout(240)


def record(rec, steps, model, pause_every=None, pause=0.0):
    """The same calls for every recorder: two score tags (one appears late), embeddings with
    spectra, gradients, scalars (one appears late)."""
    for step in steps:
        g = torch.Generator().manual_seed(step)
        rec.log_scores(step, torch.rand(8, generator=g), torch.rand(8, 32, generator=g) * 2 - 1)
        if step >= 10:
            rec.log_scores(step, torch.rand(8, generator=g), torch.rand(8, 16, generator=g) * 2 - 1, tag="ft")
        rec.log_embeddings(step, torch.randn(12, 6, generator=g), torch.randn(12, 6, generator=g))
        for p in model.parameters():
            p.grad = torch.full_like(p, float(step))
        rec.log_gradients(step, model)
        rec.log_scalars(step, loss=1.0 / (step + 1), **({"lr": 0.1} if step >= 15 else {}))
        if pause_every and step % pause_every == pause_every - 1:
            rec.flush()
            time.sleep(pause)


def frames(run):
    """Every frame of a Run, times apart (they are when each recorder was called)."""
    out = {"config": pd.Series(run.config, dtype=object), "steps": pd.Series(run.steps())}
    for tag in run.tags:
        out[f"scores {tag}"] = run.scores(tag)
        for kind in ("pos", "neg"):
            steps, edges, counts = run.histograms(tag, kind)
            out[f"hist {tag} {kind}"] = pd.DataFrame(counts, index=steps)
    for tag in run.embedding_tags:
        out[f"embeddings {tag}"] = run.embeddings(tag)
        steps, values = run.spectrum(tag)
        out[f"spectrum {tag}"] = pd.DataFrame(values, index=steps)
    out["gradients"] = run.gradients()
    out["total"] = run.total_gradient_norm()
    out["scalars"] = run.scalars()
    out["header"] = pd.Series({k: json.dumps(v) for k, v in run.header.items()})
    return out


def assert_same_run(remote, local):
    a, b = frames(remote), frames(local)
    assert list(a) == list(b)
    for name in a:
        if isinstance(a[name], pd.DataFrame):
            pd.testing.assert_frame_equal(a[name], b[name], check_exact=True, obj=name)
        else:
            pd.testing.assert_series_equal(a[name], b[name], check_exact=True, obj=name)
    ta, tb = remote.times(), local.times()
    assert list(ta.index) == list(tb.index) and np.allclose(ta, tb, atol=5.0)


def test_a_run_recorded_to_s3_equals_the_same_calls_recorded_locally(s3, bucket, tmp_path, monkeypatch):
    url = f"s3://{bucket}/runs/a"
    options = s3.options()
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    config = {"moco_m": 0.99, "seed": 1}
    local = Recorder(tmp_path / "local", config=config, spectrum_window=5, flush_secs=0.05)
    remote = Recorder(url, config=config, spectrum_window=5, flush_secs=0.05, upload_secs=1,
                      storage_options=options)
    for steps in (range(0, 10), range(10, 20)):  # two bursts, each published: several parts
        record(local, steps, model)
        record(remote, steps, model)
        local.flush()
        remote.flush()
        remote._store.publish_now()  # as the publishing thread does every upload_secs, without waiting for it
    live = open_run(url, storage_options=options)  # read while it is recorded: from its parts
    assert live.steps().tolist() == list(range(20)) and live.tags == ["train", "ft"]
    assert_same_run(live, open_run(tmp_path / "local"))
    record(local, range(20, 25), model)
    record(remote, range(20, 25), model)
    local.close()
    remote.close()
    stats = remote._store.stats
    assert stats["parts"] >= 3 and stats["failures"] == 0, stats
    # the same reader, bringing its copy up to date; then a new reader (another machine), whose
    # copy is the compacted run in one part
    assert_same_run(open_run(url, storage_options=options), open_run(tmp_path / "local"))
    monkeypatch.setenv("SCOREVIZ_CACHE_DIR", str(tmp_path / "elsewhere"))
    fresh = open_run(url, storage_options=options)
    assert_same_run(fresh, open_run(tmp_path / "local"))
    keys = sorted(s3_objects(s3, bucket))
    assert len(keys) == 2 and keys[0].startswith("runs/a/scores.manifest/") and \
        keys[1].startswith("runs/a/scores.parts/"), keys  # a finished run: one manifest, one part
    assert find_runs(f"s3://{bucket}/", storage_options=options) == [url]


def s3_objects(s3, bucket) -> dict:
    """{key: bytes} of every object in the bucket (boto3, not scoreviz's code)."""
    client = s3.client()
    keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for o in page.get("Contents", [])]
    return {k: client.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}


def test_a_runs_last_update_is_when_its_rows_were_published_not_when_they_were_copied(s3, bucket, tmp_path):
    """The app's "last update" (and its most recent runs first) of a run in a store: the time its
    newest rows were published, from the manifest (a run uploaded whole: the object's time); closing,
    compacting and heartbeats publish no rows and leave it."""
    from app.runs import RunData
    from scoreviz.store.remote import Mirror

    options = s3.options()
    rec = Recorder(f"s3://{bucket}/sweep/a", upload_secs=1, storage_options=options)
    for burst in (range(0, 5), range(5, 10)):  # two parts: closing compacts them, a manifest more
        for step in burst:
            rec.log_scalars(step, loss=float(step))
        rec.flush()
        rec._store.publish_now()
    rows_published = json.loads(manifest_of(s3, bucket, "sweep/a"))["published"]
    time.sleep(0.1)
    rec.close()
    closed = json.loads(manifest_of(s3, bucket, "sweep/a"))
    assert closed["state"] == "closed" and closed["time"] > rows_published + 0.1 and \
        closed["published"] == rows_published
    with Recorder(tmp_path / "local") as local:  # a local run uploaded whole (aws s3 cp)
        local.log_scalars(0, loss=1.0)
    s3.client().upload_file(str(tmp_path / "local" / "scores.h5"), bucket, "sweep/whole/scores.h5")
    listed = s3.client().list_objects_v2(Bucket=bucket, Prefix="sweep/whole/")["Contents"]
    uploaded = listed[0]["LastModified"].timestamp()
    mirror = Mirror(f"s3://{bucket}/sweep/", every=None, storage_options=options)  # what serve reads
    data = RunData(mirror.folder, warm=False, index=False)
    for run_id, published in (("a", rows_published), ("whole", uploaded)):
        assert abs(data.mtime(run_id) - published) < 1e-3, (run_id, data.mtime(run_id), published)
        assert data.info(run_id)["last_update"] == time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(published))
    assert abs(open_run(f"s3://{bucket}/sweep/a", storage_options=options).file.stat().st_mtime
               - rows_published) < 1e-3  # the API's copy too


def manifest_of(s3, bucket, run) -> bytes:
    """The current manifest of the run at ``run`` (boto3, not scoreviz's code)."""
    found = {k: v for k, v in s3_objects(s3, bucket).items() if k.startswith(f"{run}/scores.manifest/")}
    return found[max(found)]


def test_a_sweep_under_one_prefix_reads_as_one_grouped_by_config(s3, bucket, tmp_path):
    options = s3.options()
    for job, (m, seed) in enumerate([(0.9, 0), (0.9, 1), (0.99, 0)]):  # SLURM array jobs, each its own run
        with Recorder(f"s3://{bucket}/sweep/job-{job}", config={"moco_m": m, "seed": seed},
                      storage_options=options) as rec:
            for step in range(10):
                rec.log_scores(step, torch.full((4,), m), torch.zeros(4, 8))
    runs = find_runs(f"s3://{bucket}/sweep/", storage_options=options)
    assert runs == [f"s3://{bucket}/sweep/job-{i}" for i in range(3)]
    frame = open_runs(f"s3://{bucket}/sweep/", "pos_mean", where={"moco_m": 0.9}, storage_options=options)
    assert sorted(frame["run"].unique()) == ["job-0", "job-1"] and np.allclose(frame["value"], 0.9)
    means = open_runs(f"s3://{bucket}/sweep", "pos_mean", storage_options=options).groupby("moco_m")["value"].mean()
    assert means.to_dict() == pytest.approx({0.9: 0.9, 0.99: 0.99}, abs=1e-6)


def test_a_second_writer_is_refused_and_the_first_keeps_every_row(s3, bucket, tmp_path, monkeypatch):
    url = f"s3://{bucket}/runs/a"
    first = Recorder(url, upload_secs=1, flush_secs=0.05, storage_options=s3.options())
    for step in range(20):
        first.log_scalars(step, at=float(step))
    first.flush()
    with pytest.raises(ScorevizError, match="already being recorded"):  # this machine: the local lock
        Recorder(url, storage_options=s3.options())
    # another machine: its own local folder, so only the store can refuse it
    monkeypatch.setenv("SCOREVIZ_CACHE_DIR", str(tmp_path / "other-machine"))
    with pytest.raises(ScorevizError) as refused:
        Recorder(url, storage_options=s3.options())
    assert f"already being recorded by another Recorder (pid {os.getpid()}" in str(refused.value)
    assert not (tmp_path / "other-machine" / "write").exists() or \
        not list((tmp_path / "other-machine" / "write").rglob("scores.h5"))  # it touched nothing
    monkeypatch.undo()
    for step in range(20, 40):
        first.log_scalars(step, at=float(step))
    first.close()
    scalars = open_run(url, storage_options=s3.options()).scalars()
    assert scalars["at"].tolist() == list(range(40))


def test_a_missing_bucket_is_a_one_line_error_and_no_secret_is_ever_written(s3, bucket, capsys):
    url = f"s3://{bucket}/runs/a"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ScorevizError) as missing:
            Recorder("s3://sv-no-such-bucket/runs/a", storage_options=s3.options())
        message = str(missing.value)
        assert "\n" not in message and message.startswith("s3://sv-no-such-bucket/runs/a") and \
            "no such bucket" in message, message
        with pytest.raises(ScorevizError, match="no such bucket"):
            find_runs("s3://sv-no-such-bucket/", storage_options=s3.options())
        with Recorder(url, storage_options=s3.options(), config={"note": "x"}) as rec:
            rec.log_scalars(0, loss=1.0)
        run = open_run(url, storage_options=s3.options())
        written = b"".join(s3_objects(s3, bucket).values()) + run.file.read_bytes()
        written += b"".join(p.read_bytes() for p in run.path.parent.rglob("*") if p.is_file())
    out = capsys.readouterr()
    shown = out.out + out.err + "".join(str(w.message) for w in caught) + message
    assert s3_server.TEST_SECRET not in shown and s3_server.TEST_SECRET.encode() not in written


def test_bad_credentials_are_refused_by_a_store_that_checks_them(checked_s3, tmp_path, capsys):
    checked_s3.make_bucket("sv-checked")
    url = "s3://sv-checked/runs/a"
    wrong = {**checked_s3.options(), "secret": "wrong-secret-" + "q9" * 10}
    with pytest.raises(ScorevizError) as refused:
        Recorder(url, storage_options=wrong)
    message = str(refused.value)
    assert "\n" not in message and message.startswith(url) and "refused the credentials" in message, message
    assert wrong["secret"] not in message and wrong["secret"] not in "".join(capsys.readouterr())
    with pytest.raises(ScorevizError, match="refused the credentials"):
        find_runs("s3://sv-checked/", storage_options=wrong)
    # the right ones are accepted (moto, checking signatures, refuses s3fs's listings below a bucket's
    # root whatever the keys: a quirk of its checks, so the right keys are shown on the bucket itself)
    assert find_runs("s3://sv-checked/", storage_options=checked_s3.options()) == []


@pytest.mark.slow
def test_kill_9_loses_at_most_the_unpublished_interval_and_a_new_recorder_publishes_the_rest(
        s3, bucket, tmp_path, subprocess_env):
    url = f"s3://{bucket}/runs/killed"
    env = {**subprocess_env, **s3.env()}
    setup = ["import functools; scoreviz.Recorder = functools.partial(scoreviz.Recorder, upload_secs=1)"]
    writer = start_writer(url, env, pause=0.01, flush_every=10, setup=setup)
    wait_for(writer, "opened")
    flushed_at = []  # (time, step) of each "flushed" line
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        line = writer.lines.get(timeout=30)
        if line and line.startswith("flushed"):
            flushed_at.append((time.monotonic(), int(line.split()[1])))
    writer.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    writer.wait(30)
    flushed_at += [(killed_at, s) for s in [last_flushed(drain(writer))] if s >= 0]
    published = open_run(url, storage_options=s3.options()).scalars().index.max()
    interval = 1.0 + 1.5  # upload_secs, plus building and sending a part on a shared CPU
    older = max(s for t, s in flushed_at if t < killed_at - interval)
    assert published >= older, (published, older)  # lost at most the last interval's rows
    # a new Recorder on the URL (same machine: the same local folder; in this process, which spares
    # starting another): it publishes what the killed one left before it records anything
    Recorder(url, upload_secs=1, config={"writer": "fault suite"}, flush_secs=0.05, spectrum_window=4,
             storage_options=s3.options()).close()
    with pytest.MonkeyPatch.context() as patch:  # another machine's reader: only what is in the store
        patch.setenv("SCOREVIZ_CACHE_DIR", str(tmp_path / "reader"))
        total = check_rows(url_copy(url, s3), max(s for _, s in flushed_at))
    report("remote: killed with SIGKILL, resumed", published_at_kill=int(published), flushed_before=int(older),
           steps=total)


def url_copy(url, s3):
    """The run's local copy, brought up to date (check_rows reads a folder)."""
    return open_run(url, storage_options=s3.options()).path


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_store_stopped_for_30_s_never_stops_or_slows_the_loop(s3, bucket, tmp_path):
    url = f"s3://{bucket}/runs/outage"
    model = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.Linear(16, 4))
    times = {"before": [], "during": [], "after": []}
    step = 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rec = Recorder(url, upload_secs=1, flush_secs=0.2, storage_options=s3.options())

        def steps(seconds, phase):
            nonlocal step
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                started = time.perf_counter()
                x = torch.randn(64, 16)
                loss = model(x).square().mean()
                loss.backward()
                rec.log_scores(step, torch.rand(64), torch.rand(64, 128) * 2 - 1)
                rec.log_gradients(step, model)
                rec.log_scalars(step, loss=loss)
                times[phase].append(time.perf_counter() - started)
                step += 1
                time.sleep(0.01)

        steps(1.5, "before")
        s3.pause()  # the server stops answering: connections hang, as in a network partition
        try:
            steps(30, "during")
        finally:
            s3.resume()
        steps(1.5, "after")
        rec.close()
    summary = {phase: (len(t), 1000 * float(np.median(t)), 1000 * float(np.max(t))) for phase, t in times.items()}
    print("step times (steps, median ms, max ms):", summary)
    messages = [str(w.message) for w in caught]
    assert sum("publishing failed" in m for m in messages) == 1, messages  # warned once
    assert any("published again" in m for m in messages), messages
    assert summary["during"][2] < 1000, summary  # never stalled: a call to the store waits 20 s before it fails
    assert summary["during"][1] < 3 * summary["before"][1] + 20, summary  # never slowed (a shared CPU: loose)
    scalars = open_run(url, storage_options=s3.options()).scalars()
    assert scalars.index.tolist() == list(range(step))  # every step arrived once the store was back
    # benchmarks/fault_report.py's row (README, "What scoreviz guarantees"), once every claim of it held
    report("remote: the store stopped for 30 s", steps=step, **{f"{p}_steps": n for p, (n, _, _) in summary.items()},
           **{f"{p}_median_ms": round(m, 2) for p, (_, m, _) in summary.items()},
           **{f"{p}_max_ms": round(x, 1) for p, (_, _, x) in summary.items()})


def test_a_store_that_stops_answering_while_old_manifests_are_deleted_is_warned_about(s3, bucket):
    """A deletion waits for the store as an upload does; its failure was passed over, so a store
    that stopped during one went unsaid (the next upload, waiting in turn, ended after it was back)."""
    rec = Recorder(f"s3://{bucket}/runs/a", upload_secs=1, flush_secs=0.05, storage_options=s3.options())
    rec._store.interval = 0.2  # below the bound (1 s): the publishing thread's rounds sooner, the test shorter
    store, deletes = rec._store.store, []
    real_delete = store.delete

    def delete(keys):  # the first deletion: no answer (as a paused server's, without the 20 s wait)
        deletes.append(list(keys))
        if len(deletes) == 1:
            raise store.failure(TimeoutError("no answer in 20 s"), "delete", keys[0])
        real_delete(keys)

    store.delete = delete
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step in range(5):
            rec.log_scalars(step, loss=float(step))
        rec.flush()
        wait_until(lambda: len(deletes) >= 2 and rec._store._failing_since is None, 20)
        rec.close()
    messages = [str(w.message) for w in caught]
    said = [m for m in messages if "publishing failed" in m or "published again" in m]
    assert len(said) == 2 and "cannot delete" in said[0] and "published again" in said[1], messages
    assert open_run(f"s3://{bucket}/runs/a", storage_options=s3.options()).scalars().index.tolist() == list(range(5))
    assert len([k for k in s3_objects(s3, bucket) if "scores.manifest" in k]) == 1  # the old ones deleted after


def wait_until(condition, seconds):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.slow
def test_under_torchrun_only_rank_0_publishes(s3, bucket, tmp_path, subprocess_env):
    url = f"s3://{bucket}/runs/ddp"
    worker = tmp_path / "worker.py"
    worker.write_text(f"""
import os, torch, torch.distributed as dist, scoreviz
dist.init_process_group("gloo")
rank = dist.get_rank()
with scoreviz.Recorder({url!r}, config={{"world": 2}}) as rec:
    for step in range(5):
        rec.log_scores(step, torch.full((4,), 0.5 + 0.1 * rank), torch.zeros(4, 8))
        rec.log_scalars(step, loss=float(step))
dist.destroy_process_group()
print("rank", rank, "done", flush=True)
""")
    cache = tmp_path / "cache"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(worker)], env={**subprocess_env, **s3.env(), "SCOREVIZ_CACHE_DIR": str(cache)},
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = open_run(url, storage_options=s3.options())
    scores = run.scores("train")
    assert scores.index.tolist() == list(range(5))
    assert (scores["pos_count"] == 8).all() and np.allclose(scores["pos_mean"], 0.55)  # both ranks' scores
    manifests = [json.loads(v) for k, v in s3_objects(s3, bucket).items() if "scores.manifest" in k]
    assert len(manifests) == 1 and manifests[0]["header"]["env"]["world_size"] == 2
    assert len(list((cache / "write").rglob("staging.json"))) == 1  # one writer's local folder
