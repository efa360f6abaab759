"""Fault suite: damaged and hostile files, from a generator of truncations, byte flips and
bad headers. Reading any of them, or recording into it, is a ScorevizError naming the file,
in under 5 s and bounded memory, or (where the damage hit plain numbers, which carry no
checksum) a normal read; never another exception, never a hang. A Recorder that refuses
a file leaves it byte for byte as it was.
"""

import hashlib
import json
import multiprocessing
import random
import resource
import shutil
import time

import h5py
import numpy as np
import pytest
import torch

from faults import report
from scoreviz import Recorder, ScorevizError, open_run

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
LIMIT_S = 5.0


@pytest.fixture(scope="module")
def good_file(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("good")
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    model(torch.randn(2, 4)).sum().backward()
    with Recorder(run_dir, config={"m": 0.9}, spectrum_window=10) as rec:
        for step in range(300):
            rec.log_scores(step, torch.rand(8), torch.rand(8, 64) * 2 - 1)
            rec.log_scores(step, torch.rand(8), torch.rand(8, 64) * 2 - 1, tag="ft")
            rec.log_embeddings(step, torch.randn(8, 16), torch.randn(8, 16))
            rec.log_gradients(step, model)
            rec.log_scalars(step, loss=1.0 / (step + 1))
    return (run_dir / "scores.h5").read_bytes()


def byte_damage(data):
    """(name, damaged bytes) pairs: truncations, superblock flips, garbage, random blocks."""
    n = len(data)
    for size in (8, 16, 48, 96, 512, 1024, 2048, 4096, *(int(n * f) for f in (0.1, 0.25, 0.5, 0.75, 0.9, 0.99))):
        yield f"truncated to {size} bytes", data[:size]
    for offset in range(0, 48):
        damaged = bytearray(data)
        damaged[offset] ^= 0xFF
        yield f"superblock byte {offset} flipped", bytes(damaged)
    rng = random.Random(0)
    yield "signature then garbage", data[:8] + rng.randbytes(4096)
    yield "signature then long garbage", data[:8] + rng.randbytes(n)
    for case in range(40):
        damaged = bytearray(data)
        for _ in range(rng.randint(1, 5)):
            start, width = rng.randrange(n), rng.choice([8, 64, 512, 4096])
            damaged[start:start + width] = rng.randbytes(min(width, n - start))
        yield f"random blocks {case}", bytes(damaged)


def _set(path, where, value):
    with h5py.File(path, "r+") as f:
        group, _, name = where.rpartition("/")
        f[group or "/"].attrs[name] = value


def _resize(path, dataset, shape):
    with h5py.File(path, "r+") as f:
        f[dataset].resize(shape)


def _replace(path, dataset, data):
    with h5py.File(path, "r+") as f:
        attrs = dict(f[dataset].attrs)
        del f[dataset]
        f[dataset] = data
        f[dataset].attrs.update(attrs)


def _write(path, dataset, index, value):
    with h5py.File(path, "r+") as f:
        f[dataset][index] = value


HEADER_DAMAGE = {
    "bins a string": lambda p: _set(p, "bins", "100"),
    "bins a float": lambda p: _set(p, "bins", 100.5),
    "bins zero": lambda p: _set(p, "bins", 0),
    "bins huge": lambda p: _set(p, "bins", 2 ** 40),
    "schema a string": lambda p: _set(p, "scoreviz_schema", "two"),
    "schema an array": lambda p: _set(p, "scoreviz_schema", np.arange(3)),
    "schema from the future": lambda p: _set(p, "scoreviz_schema", 99),
    "config not JSON": lambda p: _set(p, "config", "{not json"),
    "config a JSON list": lambda p: _set(p, "config", "[1, 2]"),
    "env not UTF-8": lambda p: _set(p, "env", np.void(b"\xff\xfe{")),
    "stats columns garbage": lambda p: _set(p, "scores/stats/columns", "[1, 2"),
    "stats columns too few": lambda p: _set(p, "scores/stats/columns", json.dumps(["pos_mean"])),
    "committed streams garbage": lambda p: _set(p, "committed/streams", "nope"),
    "2e9 rows declared": lambda p: _resize(p, "scores/step", (2_000_000_000,)),
    "2e9 rows in every dataset": lambda p: [_resize(p, f"scores/{d}", (2_000_000_000,) + s)
                                             for d, s in (("step", ()), ("time", ()), ("tag", ()), ("stats", (27,)),
                                                          ("pos_hist", (100,)), ("neg_hist", (100,)))],
    "2e9 rows committed": lambda p: _write(p, "committed", (0, 0), 2_000_000_000),
    "negative rows committed": lambda p: _write(p, "committed", (1, 0), -5),
    "1e9 layers declared": lambda p: _resize(p, "gradients/norms", (300, 1_000_000_000)),
    "1e8 tag names": lambda p: _resize(p, "scores/tag_names", (100_000_000,)),
    "tag name not UTF-8": lambda p: _write(p, "scores/tag_names", 0, b"\xff\xfe"),
    "step column a group": lambda p: _replace(p, "gradients/step", np.zeros((2, 2))),
    "stats one column short": lambda p: _replace(p, "scores/stats", np.zeros((600, 26))),
    "histograms 3 bins": lambda p: _replace(p, "scores/pos_hist", np.zeros((600, 3), dtype=np.uint32)),
    "committed missing": lambda p: _replace(p, "committed", np.zeros(3)),
    "a whole group missing": lambda p: h5py.File(p, "r+").__delitem__("scalars"),
    "spectrum dim beyond its table": lambda p: _write(p, "spectrum/dim", 3, 17),
    "spectrum dim zero": lambda p: _write(p, "spectrum/dim", 0, 0),
    "spectrum dim 2**31 - 1": lambda p: _write(p, "spectrum/dim", 1, 2 ** 31 - 1),
    "1e9 eigenvalue columns": lambda p: _resize(p, "spectrum/eigenvalues", (30, 1_000_000_000)),
    "eigenvalues a 1-D column": lambda p: _replace(p, "spectrum/eigenvalues", np.zeros(30, dtype=np.float32)),
    "embedding stats columns too few": lambda p: _set(p, "embeddings/stats/columns", json.dumps(["std"])),
    "spectrum group missing": lambda p: h5py.File(p, "r+").__delitem__("spectrum"),
    "scalars/step holding strings": lambda p: _replace(p, "scalars/step", np.array([b"1"] * 300)),
    "tag names holding numbers": lambda p: _replace(p, "scores/tag_names", np.arange(2.0)),
    "committed without the new streams": lambda p: _set(p, "committed/streams",
                                                        json.dumps(["scores", "gradients", "scalars", "x", "y"])),
}


def _attempt(what, run_dir, results):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    try:
        if what == "read":
            run = open_run(run_dir)
            for tag in run.tags:
                run.scores(tag)
                run.histograms(tag, "pos")
                run.histograms(tag, "neg")
            for tag in run.embedding_tags:
                run.embeddings(tag)
                run.spectrum(tag)
            run.gradients(), run.total_gradient_norm(), run.scalars(), run.steps(), run.summary()
        else:
            with Recorder(run_dir) as rec:
                rec.log_scalars(10 ** 6, loss=0.5)
        outcome = "ok"
    except ScorevizError as err:
        outcome = "ScorevizError" if str(run_dir) in str(err) else f"ScorevizError without the file: {err}"
    except BaseException as err:  # noqa: BLE001: what the suite is looking for
        outcome = f"{type(err).__name__}: {str(err)[:200]}"
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    results.put((outcome, time.perf_counter() - start, grown_mb))


def attempt(what, run_dir):
    """(outcome, seconds, MB of memory grown) of reading or recording into a run, in a forked child."""
    results = multiprocessing.get_context("fork").Queue()
    child = multiprocessing.get_context("fork").Process(target=_attempt, args=(what, run_dir, results))
    child.start()
    child.join(60)
    if child.is_alive():
        child.kill()
        return "hang (killed after 60 s)", 60.0, 0.0
    return results.get(timeout=10) if not results.empty() else (f"died with exit code {child.exitcode}", 0.0, 0.0)


def cases(tmp_path, good_file):
    for name, data in byte_damage(good_file):
        run_dir = tmp_path / "case"
        shutil.rmtree(run_dir, ignore_errors=True)
        run_dir.mkdir()
        (run_dir / "scores.h5").write_bytes(data)
        yield name, run_dir, False
    for name, damage in HEADER_DAMAGE.items():
        run_dir = tmp_path / "case"
        shutil.rmtree(run_dir, ignore_errors=True)
        run_dir.mkdir()
        (run_dir / "scores.h5").write_bytes(good_file)
        damage(run_dir / "scores.h5")
        yield name, run_dir, True


def test_every_damaged_file_is_a_scoreviz_error_in_seconds(tmp_path, good_file):
    problems, outcomes, slowest, most_memory = [], {}, 0.0, 0.0
    tried = 0
    for name, run_dir, must_fail in cases(tmp_path, good_file):
        tried += 1
        path = run_dir / "scores.h5"
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        for what in ("read", "record"):
            outcome, seconds, grown = attempt(what, run_dir)
            outcomes[outcome if outcome in ("ok", "ScorevizError") else "other"] = \
                outcomes.get(outcome if outcome in ("ok", "ScorevizError") else "other", 0) + 1
            slowest, most_memory = max(slowest, seconds), max(most_memory, grown)
            allowed = ("ScorevizError",) if must_fail and not (what == "record" and name.startswith("schema")) \
                else ("ScorevizError", "ok")
            if outcome not in allowed:
                problems.append(f"{name} ({what}): {outcome}")
            if seconds > LIMIT_S:
                problems.append(f"{name} ({what}): {seconds:.1f} s")
            if grown > 200:
                problems.append(f"{name} ({what}): memory grew {grown:.0f} MB")
            if what == "record" and outcome != "ok" and hashlib.sha256(path.read_bytes()).hexdigest() != digest:
                problems.append(f"{name} (record): the refused file was changed")
            if what == "record" and outcome == "ok":
                break  # it was appended to: reading it again proves nothing new
    report("damaged files", files=tried, attempts=sum(outcomes.values()), outcomes=outcomes,
           slowest_s=round(slowest, 3), most_memory_mb=round(most_memory, 1))
    assert not problems, "\n".join(problems)
    assert outcomes.get("ScorevizError", 0) > tried  # most damage is found, not just survived


@pytest.mark.parametrize("name", ["truncated to 4096 bytes", "superblock byte 40 flipped", "signature then garbage"])
def test_scoreviz_info_says_one_line_about_a_damaged_file(tmp_path, good_file, capsys, name):
    from scoreviz.cli import main

    data = dict(byte_damage(good_file))[name]
    (tmp_path / "scores.h5").write_bytes(data)
    assert main(["info", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("scoreviz: error: ") and "scores.h5" in err, err


@pytest.mark.parametrize("name", sorted(HEADER_DAMAGE))
def test_scoreviz_info_says_one_line_about_a_bad_header(tmp_path, good_file, capsys, name):
    from scoreviz.cli import main

    (tmp_path / "scores.h5").write_bytes(good_file)
    HEADER_DAMAGE[name](tmp_path / "scores.h5")
    code = main(["info", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "scores.h5" in err, (code, err)


def _wrong_types():
    """(dataset, data of the wrong type and the same shape) for every dataset of the file: numbers as
    strings, names as numbers, whole numbers (steps, tags, counts) as fractions."""
    from scoreviz.store.schema import STREAMS

    for stream, spec in STREAMS.items():
        for name, dtype, width in spec.datasets:
            yield f"{stream}/{name}", "strings", lambda shape: np.full(shape, b"0.5", dtype="S8")
            if np.dtype(dtype).kind in "iu":
                yield f"{stream}/{name}", "fractions", lambda shape: np.full(shape, 0.5)
        yield f"{stream}/{spec.names}", "numbers", lambda shape: np.zeros(shape)
    yield "committed", "strings", lambda shape: np.full(shape, b"1", dtype="S8")


def test_a_dataset_of_the_wrong_type_is_a_scoreviz_error_naming_the_file(tmp_path, good_file):
    problems = []
    cases = list(_wrong_types())
    for dataset, kind, make in cases:
        path = tmp_path / "case" / "scores.h5"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(good_file)
        with h5py.File(path, "r") as f:
            shape = f[dataset].shape
        _replace(path, dataset, make(shape))
        try:
            run = open_run(path.parent)
            run.header, run.summary(), run.times(), run.gradients(), run.scalars()
            for tag in run.embedding_tags:
                run.embeddings(tag), run.spectrum(tag)
            for tag in run.tags:
                run.histograms(tag, "pos")
            problems.append(f"{dataset} as {kind}: read without an error")
        except ScorevizError as err:
            if str(path) not in str(err):
                problems.append(f"{dataset} as {kind}: the error does not name the file: {err}")
        except Exception as err:  # noqa: BLE001: what the test is looking for
            problems.append(f"{dataset} as {kind}: {type(err).__name__}: {err}")
    assert len(cases) > 30 and not problems, "\n".join(problems)


def test_a_fifo_a_folder_or_an_unreadable_file_named_scores_h5(tmp_path):
    import os

    fifo = tmp_path / "fifo"
    fifo.mkdir()
    os.mkfifo(fifo / "scores.h5")  # opening it for reading would wait for a writer forever
    folder = tmp_path / "folder"
    (folder / "scores.h5").mkdir(parents=True)
    for run_dir in (fifo, folder):
        for what in ("read", "record"):
            outcome, seconds, _ = attempt(what, run_dir)
            assert outcome == "ScorevizError" and seconds < LIMIT_S, (run_dir, what, outcome)
    if os.geteuid() != 0:  # root reads anything: checked where the suite runs unprivileged
        locked = tmp_path / "locked"
        locked.mkdir()
        (locked / "scores.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
        (locked / "scores.h5").chmod(0)
        with pytest.raises(ScorevizError, match="permission denied|cannot read"):
            open_run(locked)
