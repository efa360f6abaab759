"""Reading only what a view needs: step ranges, columns and downsampling on read
(HDF5 hyperslabs), headers without data, and the app's bounded cache."""

import json
import time

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("torch")
import scoreviz  # noqa: E402
from scoreviz.store import select  # noqa: E402
from app.runs.background import Background  # noqa: E402

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


# ---- the app: headers for the run list, bounded cache -------------------------------


@pytest.fixture
def many_runs(tmp_path):
    for i in range(6):
        steps = np.arange(0, 400, 2)
        write_run(tmp_path / f"m{i % 2}-s{i}", {"moco_m": i % 2, "seed": i}, steps, np.cos(steps + i),
                  tags=("train", "ft"), scalars={"loss": steps * 1.0})
    return tmp_path


def test_first_page_and_run_list_read_headers_only(many_runs, monkeypatch):
    import h5py

    from app import create_app
    from app.runs import RunData
    from scoreviz.store import reader
    from tests.test_app import post_callback

    opened, reads = [], []
    real_open, real_getitem = reader.open_read, h5py.Dataset.__getitem__

    def counting_open(path):
        opened.append(str(path))
        return real_open(path)

    def recording_getitem(ds, selection):
        out = real_getitem(ds, selection)
        reads.append((ds.name, np.size(out)))
        return out

    monkeypatch.setattr(reader, "open_read", counting_open)
    monkeypatch.setattr(h5py.Dataset, "__getitem__", recording_getitem)
    monkeypatch.setattr(Background, "read_forever", lambda self: None)  # no background reads: only the requests'
    dash_app = create_app(many_runs, refresh=60)
    client = dash_app.server.test_client()
    assert client.get("/").status_code == 200 and client.get("/_dash-layout").status_code == 200
    key = next(k for k in dash_app.callback_map if "run-table.children" in k)
    response = post_callback(client, dash_app, key, [0, None, None, 0, 0, 0], [None, 0])
    assert response.status_code == 200 and "m1-s5" in response.get_data(as_text=True)  # listed by name
    assert opened == [] and response.get_json()["response"]["table-refresh"]["disabled"] is False
    _read_waiting_headers(dash_app.scoreviz_data)  # what the background does first
    response = post_callback(client, dash_app, key, [0, None, None, 0, 0, 1], [None, 0],
                             changed="table-refresh.n_intervals")  # the table asks again
    listed = response.get_json()["response"]
    assert "seed" in json.dumps(listed["run-table"]["children"]) and listed["table-refresh"]["disabled"] is True
    assert sorted(opened) == sorted(str(p / "scores.h5") for p in many_runs.iterdir())  # each run once
    data_read = [name for name, size in reads if size > 1 and not name.endswith(("_names", "/committed"))]
    assert data_read == [], f"the run list read data: {data_read}"
    assert {name.rsplit("/", 1)[-1] for name, _ in reads} <= {"committed", "step", "tag_names", "layer_names",
                                                               "names"}


def test_background_reads_count_steps_of_listed_runs_and_read_selected_runs_in_full(many_runs):
    from app.runs import RunData

    data = RunData(many_runs)
    ids = data.run_ids()
    data.warm(ids)
    data.warm(ids[:1], urgent=True)
    deadline = time.monotonic() + 60
    while not data.warm_idle() and time.monotonic() < deadline:
        time.sleep(0.05)
    kinds = {(key[0], key[1]) for key in data.cache.keys()}
    assert {(r, "info") for r in ids} <= kinds  # every listed run: its step count
    assert {r for r, kind in kinds if kind == "scores"} == {ids[0]}  # only the selected run's data
    assert data.table_row(ids[3])["steps"] == 200


def test_cache_is_an_lru_bounded_in_bytes(many_runs):
    from app.runs import RunData

    probe = RunData(many_runs, warm=False)
    one = probe.scores("m0-s0", "train").memory_usage(deep=False).sum()
    data = RunData(many_runs, max_bytes=int(2.5 * one), warm=False)
    ids = data.run_ids()
    for run_id in ids:
        data.scores(run_id, "train")
    data.scores(ids[-2], "train")  # used again: now the most recent
    data.scores(ids[0], "ft")
    assert data.cache.bytes <= data.cache.max_bytes
    cached = [key[0] for key in data.cache.keys() if key[1] == "scores"]
    assert ids[-2] in cached and ids[1] not in cached


def test_a_header_refuses_declared_sizes_the_file_cannot_hold(tmp_path):
    import h5py

    folder = write_run(tmp_path / "absurd", {}, np.arange(5), np.zeros(5))
    with h5py.File(folder / "scores.h5", "r+") as f:
        f["scores/step"].resize((2_000_000_000,))
    with pytest.raises(scoreviz.ScorevizError, match="declares shape"):
        scoreviz.open_run(folder, header=True)


# ---- a thousand runs: the page does not wait for every header -----------------------


def _counting_opens(monkeypatch):
    from scoreviz.store import reader

    opened, real_open = [], reader.open_read

    def counting_open(path):
        opened.append(str(path))
        return real_open(path)

    monkeypatch.setattr(reader, "open_read", counting_open)
    return opened


def test_the_selected_runs_are_read_first_then_the_headers_of_the_rows_on_screen(many_runs, monkeypatch):
    from app.runs import RunData
    from app.runs.background import COUNT as _COUNT, HEADER as _HEADER, REST as _REST, SCORES as _SCORES

    monkeypatch.setattr(Background, "read_forever", lambda self: None)  # the queue is looked at, not read
    monkeypatch.setattr(Background, "list_all", lambda self: None)
    data = RunData(many_runs, index=False)
    data.warm(["m1-s5"])  # every listed run: header, then step count
    assert data.table_row("m0-s4") is None  # a row on screen: its header is queued ahead
    data.warm(["m1-s3"], urgent=True)  # selected afterwards
    order = []
    while not data.background.queue.empty():
        _, _, run_id, level = data.background.queue.get()
        order.append((run_id, level))
    assert order == [("m1-s3", _SCORES), ("m0-s4", _HEADER), ("m1-s5", _HEADER), ("m1-s3", _REST),
                     ("m1-s5", _COUNT)]


def _read_waiting_headers(data) -> list:
    """Read the headers a run table waits for, as the background reader does before the others
    (but the selected runs' scores); returns their run ids."""
    from app.runs.background import HEADER as _HEADER, ON_SCREEN as _ON_SCREEN, SCORES as _SCORES

    waiting, others = [], []
    while not data.background.queue.empty():
        item = data.background.queue.get()
        (waiting if item[3] == _HEADER and item[0] == _ON_SCREEN else others).append(item)
    for item in others:
        data.background.queue.put(item)
    selected = [other for other in others if other[3] == _SCORES]
    assert all(other < item for item in waiting for other in selected)  # the selected runs' scores first
    assert all(item < other for item in waiting for other in others if other[3] != _SCORES)  # then these
    for _, _, run_id, _ in sorted(waiting):
        data.light_info(run_id)
    return [run_id for _, _, run_id, _ in sorted(waiting)]


def _run_list(dash_app, client, filter_text=None, page=0, changed=None):
    from tests.test_app import post_callback

    key = next(k for k in dash_app.callback_map if "run-table.children" in k)
    response = post_callback(client, dash_app, key, [0, filter_text, None, 0, 0, 0], [None, page],
                             changed=changed or "refresh.n_intervals")
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()["response"]


def _table_runs(response) -> list:
    import json

    return [row["props"]["data-run"] for row in _rows(json.loads(json.dumps(response["run-table"]["children"])))]


def _rows(node):
    if isinstance(node, dict):
        props = node.get("props", {})
        if "data-run" in props:
            return [node]
        return _rows(props.get("children"))
    if isinstance(node, list):
        return [row for child in node for row in _rows(child)]
    return []


def test_a_restarted_server_lists_runs_from_its_header_index_without_opening_them(many_runs, monkeypatch):
    from app import create_app
    from app.runs import RunData

    monkeypatch.setattr(Background, "read_forever", lambda self: None)  # no background reads: only the requests'
    first = create_app(many_runs, refresh=60)
    _run_list(first, first.server.test_client())  # queues the table's headers
    _read_waiting_headers(first.scoreviz_data)  # reads each header once
    _run_list(first, first.server.test_client(), changed="table-refresh.n_intervals")  # saves the index
    opened = _counting_opens(monkeypatch)
    again = create_app(many_runs, refresh=60)  # a restart: a new server, the same folders
    client = again.server.test_client()
    assert client.get("/_dash-layout").status_code == 200
    listed = _run_list(again, client)
    assert opened == [] and "moco_m" in client.get("/_dash-layout").get_data(as_text=True)
    assert sorted(_table_runs(listed)) == sorted(p.name for p in many_runs.iterdir())
    # a run that changed since is read again, the others still come from the index
    write_run(many_runs / "m0-s0", {"moco_m": 0, "seed": 0}, np.arange(400, 403), np.zeros(3))
    opened.clear()  # the writer's own opens
    changed = create_app(many_runs, refresh=60)
    listed = _run_list(changed, changed.server.test_client())
    assert opened == [] and _read_waiting_headers(changed.scoreviz_data) == ["m0-s0"]
    assert opened == [str(many_runs / "m0-s0" / "scores.h5")]
    assert changed.scoreviz_data.light_info("m0-s0")["last_step"] == 402  # its new rows, not the index's


def test_a_damaged_header_index_is_an_empty_one(many_runs, monkeypatch):
    from app.runs import RunData

    data = RunData(many_runs, warm=False)
    for run_id in data.run_ids():
        data.light_info(run_id)
    data.save_headers(data.run_ids())
    data.index.path.write_text('{"version": 1, "runs": {"x": [1, 2')  # cut off mid-write
    fresh = RunData(many_runs, warm=False)
    assert fresh.known_info("m1-s1") is None and fresh.light_info("m1-s1")["config"]["seed"] == 1


def test_an_index_of_an_older_version_is_not_used_its_headers_lack_the_embedding_tags(many_runs):
    import json

    from app.runs import RunData
    from app.runs.headers import VERSION

    data = RunData(many_runs, warm=False)
    data.light_info("m1-s1")
    data.save_headers(data.run_ids())
    saved = json.loads(data.index.path.read_text())
    assert saved["version"] == VERSION and all("embedding_tags" in entry[2] for entry in saved["runs"].values())
    for entry in saved["runs"].values():  # as version 1 wrote them
        entry[2].pop("embedding_tags")
        entry[2]["config"] = {"seed": "from the old index"}
    data.index.path.write_text(json.dumps(dict(saved, version=1)))
    fresh = RunData(many_runs, warm=False)
    assert fresh.known_info("m1-s1") is None and fresh.light_info("m1-s1")["config"]["seed"] == 1
    assert fresh.light_info("m1-s1")["embedding_tags"] == []  # many_runs log no embeddings


def test_the_page_and_the_run_table_do_not_wait_for_every_header(tmp_path, monkeypatch):
    """120 runs, headers read in the background (held back here): the page and the run table open
    no file, the table lists every run in the picker and asks the background for the headers of
    its page of rows first (then again, soon), pages through the rest, and a config filter covers
    the runs whose header is read."""
    from app import create_app
    from app.shell import runtable

    for i in range(120):
        write_run(tmp_path / f"run{i:03d}", {"moco_m": i % 5, "seed": i}, np.arange(3), np.zeros(3))
    monkeypatch.setattr(Background, "read_forever", lambda self: None)
    opened = _counting_opens(monkeypatch)
    dash_app = create_app(tmp_path, refresh=60)
    client = dash_app.server.test_client()
    assert client.get("/").status_code == 200 and client.get("/_dash-layout").status_code == 200
    assert opened == []  # the page: runs found on disk, no header read
    listed = _run_list(dash_app, client)
    assert _table_runs(listed) == [f"run{i:03d}" for i in range(runtable.PAGE_ROWS)]
    assert opened == [] and "seed" not in json.dumps(listed["run-table"]["children"])  # names only, at once
    assert listed["table-page-label"]["children"] == "runs 1-50 of 120"
    assert "reading 120 of 120 run headers" in listed["last-refresh"]["children"]
    assert listed["table-refresh"]["disabled"] is False  # the table asks again soon
    first = _read_waiting_headers(dash_app.scoreviz_data)  # the background: the page's headers first
    assert first == [f"run{i:03d}" for i in range(runtable.PAGE_ROWS)] and len(set(opened)) == runtable.PAGE_ROWS
    listed = _run_list(dash_app, client, changed="table-refresh.n_intervals")
    assert "seed" in json.dumps(listed["run-table"]["children"]) and listed["table-refresh"]["disabled"] is True
    assert "reading 70 of 120 run headers" in listed["last-refresh"]["children"]
    last = _run_list(dash_app, client, page=1, changed="table-next.n_clicks")
    _read_waiting_headers(dash_app.scoreviz_data)
    last = _run_list(dash_app, client, page=2, changed="table-refresh.n_intervals")
    assert _table_runs(last) == [f"run{i:03d}" for i in range(100, 120)]
    assert last["table-page"]["data"] == 2 and last["table-page-label"]["children"] == "runs 101-120 of 120"
    # a config condition covers the runs whose header is read: the two pages shown, here
    kept = _run_list(dash_app, client, "moco_m=3", page=2, changed="run-filter.value")
    assert _table_runs(kept) == [f"run{i:03d}" for i in list(range(3, 50, 5)) + list(range(103, 120, 5))]
    assert kept["table-page"]["data"] == 0 and kept["table-page-label"]["children"] == "runs 1-14 of 14"
    for run_id in dash_app.scoreviz_data.run_ids():  # what the background does
        dash_app.scoreviz_data.light_info(run_id)
    kept = _run_list(dash_app, client, "moco_m=3", changed="run-filter.value")
    assert len(_table_runs(kept)) == 24 and "reading" not in kept["last-refresh"]["children"]


def test_background_reads_wait_while_a_request_is_answered(many_runs):
    from app.runs import RunData

    data = RunData(many_runs)
    ids = data.run_ids()
    deadline = time.monotonic() + 60
    while not data.warm_idle() and time.monotonic() < deadline:  # the listing: every header
        time.sleep(0.05)
    data.background.request_started()  # a page request in flight
    data.warm(ids[:1], urgent=True)
    time.sleep(0.5)
    assert data.pending(ids[:1]) == ids[:1]  # not read meanwhile
    data.background.request_finished()
    while data.pending(ids[:1]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert data.pending(ids[:1]) == []


def test_every_kth_row_is_read_in_blocks_and_strided_in_memory(tmp_path, monkeypatch):
    import h5py

    from scoreviz.store import select

    values = np.arange(1000 * 3, dtype=np.float64).reshape(1000, 3)
    with h5py.File(tmp_path / "f.h5", "w") as f:
        f.create_dataset("d", data=values, chunks=(64, 3))
        f.create_dataset("s", data=values[:, 0], chunks=(64,))
    monkeypatch.setattr(select, "_BLOCK_ROWS", 50)  # many blocks, none a multiple of every step
    with h5py.File(tmp_path / "f.h5", "r") as f:
        for start, stop, step in [(0, 1000, 7), (3, 998, 13), (5, 6, 4), (0, 1000, 1), (10, 900, 120)]:
            rows = np.arange(start, stop, step)
            np.testing.assert_array_equal(select._read_selected(f["d"], rows, slice(0, 2)), values[rows, :2])
            np.testing.assert_array_equal(select._read_selected(f["s"], rows, None), values[rows, 0])
            ending = np.append(rows[:-1], stop) if stop < 1000 and len(rows) > 2 else rows  # every k-th, then the last
            np.testing.assert_array_equal(select._read_selected(f["d"], ending, slice(0, 3)), values[ending])


def test_the_selection_waits_for_its_runs_and_is_asked_again_soon_when_they_take_longer(many_runs, monkeypatch):
    from app import create_app
    from app.shell import selection
    from tests.test_app import post_state

    dash_app = create_app(many_runs, refresh=60)  # the page's own refresh: once a minute
    client = dash_app.server.test_client()
    # the answer waits while the run is read (a small run: well within SELECTION_WAIT_S)
    first = post_state(client, dash_app, "?runs=m0-s0")
    assert first["curves-curves-state"]["data"]["runs"] == ["m0-s0"] and "reading" not in json.dumps(first["notice"])
    assert first["selection-refresh"]["max_intervals"] == 0  # nothing left to ask for
    # a run not read within the wait: answered without it, and the page asks once more, soon
    monkeypatch.setattr(selection, "SELECTION_WAIT_S", 0.0)
    first = post_state(client, dash_app, "?runs=m1-s1", {"selection-refresh": 3})
    assert first["curves-curves-state"]["data"]["runs"] == [] and "reading 1 run" in json.dumps(first["notice"])
    assert first["selection-refresh"]["max_intervals"] == 4  # one tick more than the 3 already fired
    deadline = time.monotonic() + 60
    while dash_app.scoreviz_data.pending(["m1-s1"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    again = post_state(client, dash_app, "?runs=m1-s1", {"selection-refresh": 4}, changed="selection-refresh.n_intervals")
    assert again["curves-curves-state"]["data"]["runs"] == ["m1-s1"] and again["selection-refresh"]["max_intervals"] == 0


def test_a_request_waiting_for_reads_does_not_hold_the_background_reader_back(many_runs, monkeypatch):
    from app.runs import background as data_module
    from app.runs import RunData

    monkeypatch.setattr(data_module, "YIELD_S", 60.0)  # a request in flight would hold reads a minute
    data = RunData(many_runs)
    ids = data.run_ids()
    data.background.request_started()  # the request that waits
    data.warm(ids[:2], urgent=True)
    start = time.monotonic()
    assert data.wait_read(ids[:2], timeout=30) == []
    assert time.monotonic() - start < 30
    data.background.request_started()  # a second request, answering meanwhile: reads wait for it
    data.warm(ids[2:3], urgent=True)
    assert data.wait_read(ids[2:3], timeout=0.5) == ids[2:3]
    data.background.request_finished()
    assert data.wait_read(ids[2:3], timeout=30) == []
    data.background.request_finished()
    # requests waiting hold the server's threads: beyond MAX_WAITING they answer at once
    data.background._waiting = data_module.MAX_WAITING
    for _ in range(data_module.MAX_WAITING + 2):  # those waiting, and one more answering: reads wait
        data.background.request_started()
    data.warm(ids[3:4], urgent=True)
    start = time.monotonic()
    assert data.wait_read(ids[3:4], timeout=30) == ids[3:4] and time.monotonic() - start < 1.0
    data.background._waiting = 0
    for _ in range(data_module.MAX_WAITING + 2):
        data.background.request_finished()
    assert data.wait_read(ids[3:4], timeout=30) == []


def test_a_growing_run_keeps_its_row_while_its_header_is_read_again(many_runs, monkeypatch):
    from app.runs import RunData

    monkeypatch.setattr(Background, "read_forever", lambda self: None)  # background reads held back
    data = RunData(many_runs)
    assert data.table_row("m0-s0") is None  # never read: its name only, until the background reads it
    data.light_info("m0-s0")
    assert data.table_row("m0-s0")["config"] == {"moco_m": 0, "seed": 0}
    write_run(many_runs / "m0-s0", {"moco_m": 0, "seed": 0}, np.arange(400, 403), np.zeros(3))  # it grew
    assert data.known_info("m0-s0") is None  # its header is stale now
    row = data.table_row("m0-s0")  # the row stays, with the header read before, while it is read again
    assert row is not None and row["config"] == {"moco_m": 0, "seed": 0}
    assert set(_read_waiting_headers(data)) == {"m0-s0"}
