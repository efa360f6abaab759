"""Fault suite: `scoreviz export --out` aimed at what it must not replace (issue 25, failures 6 and 7).

The export writes its report over nothing but a new path or, with --force, a regular file:
never the file of a run it reads (a live writer would lose every later step without an
error), never a device, a FIFO, a link or a folder.
"""

import os
import stat

import pytest

from faults import check_rows, drain, last_flushed, report, start_writer, wait_for
from scoreviz import ScorevizError

pytestmark = pytest.mark.slow


class Done:
    def __init__(self, code, out, err):
        self.returncode, self.stdout, self.stderr = code, out, err


@pytest.fixture
def export(capsys):
    """`scoreviz export ARGS` run in this process (its command line, its one-line errors)."""
    from scoreviz.cli import main

    def run(*args):
        capsys.readouterr()
        code = main(["export", *map(str, args)])
        out, err = capsys.readouterr()
        return Done(code, out, err)
    return run


def test_export_over_the_file_of_a_run_being_recorded_is_refused(tmp_path, subprocess_env, export):
    """Failure 6: `scoreviz export RUN --out RUN/scores.h5 --force` wrote the report over the run's
    file, said "wrote" and exited 0; the live writer then lost every later step without an error."""
    run = tmp_path / "live"
    hold = tmp_path / "hold"
    hold.touch()
    writer = start_writer(run, subprocess_env, steps=200, pause=0.002, flush_every=20,
                          setup=[f"HOLD = {str(hold)!r}"])
    lines = wait_for(writer, "flushed")
    outs = [run / "scores.h5", run / "." / "scores.h5", run / "scores.h5.lock"]
    (tmp_path / "alias").symlink_to(run)
    outs.append(tmp_path / "alias" / "scores.h5")
    for out in outs:
        done = export(run, "--out", out, "--force")
        assert done.returncode == 1 and "would destroy the run" in done.stderr, (out, done.stdout, done.stderr)
        assert done.stderr.count("\n") == 1 and "wrote" not in done.stdout
    hold.unlink()
    lines += drain(writer)
    assert writer.wait(timeout=60) == 0 and "closed" in lines, lines[-5:]
    rows = check_rows(run, last_flushed(lines))
    assert rows == 200, rows  # every step the writer logged is there
    report("hostile input", what="`scoreviz export RUN --out RUN/scores.h5 --force` (and through a link, "
           "and the run's lock file) while the run is recorded", tried=len(outs),
           result="refused in one line, exit 1; the writer went on, all 200 steps in the file (was: the report "
                  "written over the run, exit 0, every later step lost)")


def test_force_replaces_only_regular_files(tmp_path, export):
    """Failure 7: `--force` onto a device node or a FIFO (`--out /dev/null` as root) replaced it with a
    regular file."""
    from test_app import make_run

    run = make_run(tmp_path / "runs", "a", steps=4)
    # a device node like /dev/null, made here: the test never aims at the machine's own
    try:
        os.mknod(tmp_path / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("making a device node needs root (CAP_MKNOD)")
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "folder").mkdir()
    (tmp_path / "link.html").symlink_to(tmp_path / "elsewhere.html")
    targets = {tmp_path / "null": stat.S_ISCHR, tmp_path / "fifo": stat.S_ISFIFO, tmp_path / "folder": stat.S_ISDIR,
               tmp_path / "link.html": stat.S_ISLNK}
    for out, kind in targets.items():
        done = export(run, "--out", out, "--force")
        assert done.returncode == 1 and done.stderr.startswith("scoreviz: error: --out"), (out, done.stderr)
        assert done.stderr.count("\n") == 1
        assert kind(os.lstat(out).st_mode), out  # still what it was
    (tmp_path / "old.html").write_text("old")
    assert export(run, "--out", tmp_path / "old.html", "--force").returncode == 0
    assert "<html" in (tmp_path / "old.html").read_text()
    report("hostile input", what="`scoreviz export --force` onto a device node (as /dev/null), a FIFO, a folder and a symbolic link",
           tried=len(targets), result="refused in one line, each left as it was; a regular file is replaced "
                                      "(was: /dev/null and the FIFO replaced by a regular file)")


def test_output_file_refuses_a_run_file_by_name_link_and_hard_link(tmp_path):
    from scoreviz.bridges.export import output_file

    (tmp_path / "run").mkdir()
    store = tmp_path / "run" / "scores.h5"
    store.write_bytes(b"run")
    os.link(store, tmp_path / "hard.html")
    (tmp_path / "soft.html").symlink_to(store)
    for out in (store, tmp_path / "hard.html", tmp_path / "soft.html", tmp_path / "run" / ".scores.h5.1.partial"):
        with pytest.raises(ScorevizError, match="would destroy the run"):
            output_file(out, force=True, reads=[tmp_path / "run"])
        with pytest.raises(ScorevizError, match="would destroy the run"):
            output_file(out, force=True, reads=[store])
    assert output_file(tmp_path / "run" / "report.html", reads=[tmp_path / "run"]) == tmp_path / "run" / "report.html"
    assert store.read_bytes() == b"run"


def test_every_export_format_checks_its_output_the_same_way(tmp_path, export):
    """The Parquet and TensorBoard exports go through the same checks: --force never replaces a
    FIFO named as a table, and a run's own folder is never a TensorBoard target (its old event
    files would be deleted as the export's own)."""
    from test_app import make_run

    run = make_run(tmp_path / "runs", "a", steps=4)
    (tmp_path / "tables").mkdir()
    os.mkfifo(tmp_path / "tables" / "scores.parquet")
    done = export(run, "--format", "parquet", "--out", tmp_path / "tables", "--force")
    assert done.returncode == 1 and "is a FIFO, not a regular file" in done.stderr, done.stderr
    assert stat.S_ISFIFO(os.lstat(tmp_path / "tables" / "scores.parquet").st_mode)
    own = run / "events.out.tfevents.1.host"  # the training's own TensorBoard log beside scores.h5
    own.write_bytes(b"the run's own")
    done = export(run, "--format", "tensorboard", "--out", tmp_path / "runs", "--force")
    assert done.returncode == 1 and "is the folder of the run" in done.stderr, done.stderr
    assert own.read_bytes() == b"the run's own"
    assert export(run, "--format", "parquet", "--out", tmp_path / "fresh").returncode == 0
    report("hostile input", what="`scoreviz export --format parquet --force` with a table's name a FIFO; "
           "`--format tensorboard --force` whose target is the run's own folder (its own event file in it)", tried=2,
           result="refused in one line, the FIFO and the run's event file left as they were (was: the FIFO "
                  "replaced by a table; the run's own event files deleted as old exports)")
