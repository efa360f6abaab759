"""Fault suite: run folders that cannot be entered, listed or read, and symbolic link loops
(issue 25, failure 15 and the library's side of failure 5): open_run, find_runs and
`scoreviz info` say so in a ScorevizError naming the path, never a raw OSError.

The suite runs as root in CI, and root reads whatever the permission bits say. So the
permission cases run in a child process that first gives up the two capabilities that let
root pass them (CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH, with capset(2)): from then on the
owner's bits apply to it as to any user. A child that cannot give them up, or still reads
a folder of mode 000 after, skips the test, saying so.
"""

import json
import os
import subprocess
import sys

import pytest
import torch

from faults import ROOT, report
from scoreviz import Recorder, ScorevizError, find_runs, open_run
from scoreviz.cli import main

WITHOUT_ROOTS_PASS = r'''
import ctypes, json, os, sys
if os.geteuid() == 0:
    libc = ctypes.CDLL(None, use_errno=True)
    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]
    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]
    header, data = Header(0x20080522, 0), (Data * 2)()  # _LINUX_CAPABILITY_VERSION_3
    DAC = (1 << 1) | (1 << 2)  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
    if libc.capget(ctypes.byref(header), data) != 0:
        print(json.dumps({"skip": "capget failed"})); sys.exit(0)
    data[0].effective &= ~DAC
    data[0].permitted &= ~DAC
    if libc.capset(ctypes.byref(header), data) != 0:
        print(json.dumps({"skip": f"capset failed (errno {ctypes.get_errno()})"})); sys.exit(0)
'''

DROPPED_CHECK = r'''
try:
    os.listdir(sys.argv[1])
    print(json.dumps({"skip": "a folder of mode 000 can still be listed"})); sys.exit(0)
except PermissionError:
    pass
'''

CHECKS = r'''
import contextlib, io
import scoreviz
from scoreviz.cli import main
out = {"runs": [str(p) for p in scoreviz.find_runs(sys.argv[2])], "open": {}, "info": {}}
for run in sys.argv[3:]:
    try:
        scoreviz.open_run(run).summary()
        out["open"][run] = "ok"
    except scoreviz.ScorevizError as err:
        out["open"][run] = f"ScorevizError: {err}"
    except BaseException as err:
        out["open"][run] = f"{type(err).__name__}: {err}"
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(["info", run])
        except BaseException as raised:
            code = f"raised {type(raised).__name__}"
    out["info"][run] = [code, err.getvalue()]
print(json.dumps(out))
'''


def make_run(folder):
    with Recorder(folder, config={"m": 0.9}) as rec:
        rec.log_scores(0, torch.full((4,), 0.5), torch.zeros(4, 8))


def unprivileged(*args):
    """Run CHECKS in a child without root's pass through permission bits; its JSON result."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, "-c", WITHOUT_ROOTS_PASS + DROPPED_CHECK + CHECKS, *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if "skip" in result:
        pytest.skip(f"cannot drop root's pass through permission bits here: {result['skip']}")
    return result


def test_folders_without_permission_are_scoreviz_errors(tmp_path):
    """Failure 15: a run folder without execute permission gave a raw PermissionError
    (a 21-line traceback in `scoreviz info`)."""
    runs = tmp_path / "runs"
    for name in ("good", "no-execute", "no-access", "file-unreadable"):
        make_run(runs / name)
    (runs / "file-unreadable" / "scores.h5").chmod(0)
    (runs / "no-execute").chmod(0o600)  # may be listed, not entered
    (runs / "no-access").chmod(0)       # neither
    probe = tmp_path / "probe"
    probe.mkdir(mode=0)
    broken = [runs / n for n in ("no-execute", "no-access", "file-unreadable")]
    try:
        result = unprivileged(probe, runs, runs / "good", *broken)
    finally:
        for folder in (probe, runs / "no-execute", runs / "no-access"):
            folder.chmod(0o755)
    assert result["open"][str(runs / "good")] == "ok" and result["info"][str(runs / "good")][0] == 0
    for run in broken:
        opened, (code, err) = result["open"][str(run)], result["info"][str(run)]
        assert opened.startswith("ScorevizError: ") and str(run) in opened, opened
        assert "Permission denied" in opened or "permission denied" in opened, opened
        assert code == 1 and err.count("\n") == 1 and err.startswith("scoreviz: error: "), (code, err)
    # every broken run is listed beside the good one, so a run list can show why it is broken
    assert sorted(result["runs"]) == sorted(str(p) for p in [runs / "good", *broken])
    report("hostile input", what="run folders without execute or any permission, and a scores.h5 nobody "
           "may read (checked without root's pass through permission bits)", tried=len(broken),
           result="each listed by find_runs beside the good run; opening it, and `scoreviz info`, a one-line "
                  "ScorevizError naming the path and the errno (was: a 21-line PermissionError traceback)")


def test_symbolic_link_loops_are_scoreviz_errors(tmp_path, capsys):
    """Failure 5, the library's side: a run folder that is a link loop (loop -> loop), or a
    scores.h5 linked to itself, said 'no such run' or 'not a run', and find_runs left the
    second out: now both say so, and the second is listed as a broken run."""
    runs = tmp_path / "runs"
    make_run(runs / "good")
    (runs / "loop").symlink_to("loop")
    (runs / "self").mkdir()
    (runs / "self" / "scores.h5").symlink_to("scores.h5")
    (runs / "pair").mkdir()
    (runs / "pair" / "scores.h5").symlink_to("other.h5")
    (runs / "pair" / "other.h5").symlink_to("scores.h5")
    for run in ("loop", "self", "pair"):
        with pytest.raises(ScorevizError, match="symbolic link loop") as err:
            open_run(runs / run)
        assert str(runs / run) in str(err.value)
        assert main(["info", str(runs / run)]) == 1
        out = capsys.readouterr().err
        assert out.count("\n") == 1 and "symbolic link loop" in out, out
    # a linked folder is not entered (as for any linked folder); a looping scores.h5 is a broken run
    assert find_runs(runs) == [runs / "good", runs / "pair", runs / "self"]
    with pytest.raises(ScorevizError, match="symbolic link loop"):
        find_runs(runs / "loop")
    report("hostile input", what="a run folder linked to itself, a scores.h5 linked to itself, two links to each "
           "other", tried=3, result="find_runs lists the looping scores.h5 as a broken run; opening any of them and "
                                    "`scoreviz info` a one-line ScorevizError saying it is a symbolic link loop")
