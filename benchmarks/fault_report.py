"""Run the fault suite (tests/test_fault_*.py, tests/test_server_faults.py, tests/test_remote.py) and print what
it measured as a table.

    python benchmarks/fault_report.py [--scale 2.5] [TEST_FILE ...]

--scale multiplies the randomised faults (kills, simultaneous starts); the disk-full
cases need root (they mount a tmpfs). TEST_FILE: only these files of the suite
(e.g. tests/test_remote.py: a run in an object store, killed and its store stopped
for 30 s). The fault table of docs/guarantees.md ("What scoreviz guarantees") is this script's output.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main():
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--scale", type=float, default=2.5, help="times the randomised faults are tried (default 2.5)")
    parser.add_argument("tests", nargs="*", metavar="TEST_FILE", help="only these files of the suite (default: all)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.jsonl"
        env = dict(os.environ, SCOREVIZ_FAULT_REPORT=str(report), SCOREVIZ_FAULT_SCALE=str(args.scale))
        tests = sorted(str(p) for p in (ROOT / "tests").glob("test_fault_*.py"))
        tests += [str(ROOT / "tests" / "test_server_faults.py"), str(ROOT / "tests" / "test_remote.py")]
        tests = [str(Path(t).resolve()) for t in args.tests] or tests
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests],
                              cwd=ROOT, env=env)
        rows = [json.loads(line) for line in report.read_text().splitlines()] if report.exists() else []
    print(table(rows))
    return done.returncode


def table(rows):
    lines = ["| fault | tried | what happened |", "|---|---:|---|"]
    for row in rows:
        case = row["case"]
        if case == "SIGKILL at random moments":
            phases = row["phases"]
            where = (f"{phases.get('imported', 0)} inside Recorder(), {phases.get('opened', 0)} right after it "
                     f"opened, {phases.get('flushed', 0)} while writing")
            lines.append(f"| writer killed with SIGKILL, resumed after each ({where}) | {row['kills']} kills | "
                         f"{row['rows_lost']} flushed rows lost or shifted; {row['rows']:,} rows in the end; "
                         f"no temporary file left |")
        elif case == "two writers at once":
            lines.append(f"| two processes start a Recorder on one new run at the same instant | {row['tries']} pairs | "
                         f"one records, the other gets a ScorevizError naming it; {row['rows_lost']} rows lost |")
        elif case == "disk full while recording":
            lines.append(f"| the disk fills while recording ({row['check']} check) | 1 run | ScorevizError with errno "
                         f"28 at the loop's next call; {row['rows_kept']:,} flushed rows kept, {row['rows_lost']} lost; "
                         "no crash at exit; resumed after freeing space |")
        elif case == "damaged files":
            outcomes = row["outcomes"]
            lines.append(f"| damaged or hostile files, read and recorded into | {row['files']} files, "
                         f"{row['attempts']} attempts | {outcomes.get('ScorevizError', 0)} ScorevizError naming the "
                         f"file, {outcomes.get('ok', 0)} read normally (damage in plain numbers), "
                         f"{outcomes.get('other', 0)} other; slowest {row['slowest_s']:.2f} s, at most "
                         f"{row['most_memory_mb']:.0f} MB more memory |")
        elif case == "bad values at the call":
            lines.append(f"| bad values passed to the log calls | {row['cases']} kinds | all refused at the call; "
                         f"{row['rows_misaligned']} rows misaligned |")
        elif case == "remote: killed with SIGKILL, resumed":
            lines.append(f"| a Recorder on s3:// (moto's S3 server, upload_secs 1) killed with SIGKILL while writing; "
                         f"a new Recorder on the URL | 1 kill | step {row['published_at_kill']} was in the store at the "
                         f"kill (every step flushed 2.5 s before it, up to {row['flushed_before']}, was); the new "
                         f"Recorder published the rest from the local file: {row['steps']} steps, none lost or "
                         "shifted |")
        elif case == "remote: the store stopped for 30 s":
            ms = {p: (row[f"{p}_median_ms"], row[f"{p}_max_ms"]) for p in ("before", "during", "after")}
            lines.append(f"| the S3 server stopped (SIGSTOP: connections hang) for 30 s while recording "
                         f"(upload_secs 1) | 1 outage, {row['during_steps']} steps in it | the loop never raised or "
                         f"stalled: a step's median {ms['before'][0]:.0f} ms before, {ms['during'][0]:.0f} ms during, "
                         f"{ms['after'][0]:.0f} ms after (slowest {ms['before'][1]:.0f}, {ms['during'][1]:.0f}, "
                         f"{ms['after'][1]:.0f}); one warning, and one when published again; all {row['steps']} "
                         "steps in the store after |")
        elif case in ("hostile request", "hostile input"):
            lines.append(f"| {row['what']} | {row['tried']} | {row['result']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
