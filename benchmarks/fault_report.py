"""Run the fault suite (tests/test_fault_*.py, tests/test_server_faults.py) and print what it measured as a table.

    python benchmarks/fault_report.py [--scale 2.5]

--scale multiplies the randomised faults (kills, simultaneous starts); the disk-full
cases need root (they mount a tmpfs). The README's "What scoreviz guarantees"
table is this script's output.
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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=2.5, help="times the randomised faults are tried (default 2.5)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.jsonl"
        env = dict(os.environ, SCOREVIZ_FAULT_REPORT=str(report), SCOREVIZ_FAULT_SCALE=str(args.scale))
        tests = sorted(str(p) for p in (ROOT / "tests").glob("test_fault_*.py"))
        tests.append(str(ROOT / "tests" / "test_server_faults.py"))
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
        elif case in ("hostile request", "hostile input"):
            lines.append(f"| {row['what']} | {row['tried']} | {row['result']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
