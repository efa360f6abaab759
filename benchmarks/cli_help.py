"""How long `scoreviz --help` and every `scoreviz COMMAND --help` take, as a user runs them.

    python benchmarks/cli_help.py [--repeat 5]

Runs the installed `scoreviz` entry point (a fresh interpreter each time, as in a
shell) and prints the median and the worst wall time per command, with the load
average, since the machine may be shared. Target: under 1 s each.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time

COMMANDS = ["", "info", "train", "lincls", "demo", "import-tensorboard", "serve", "export"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    exe = shutil.which("scoreviz") or os.path.join(os.path.dirname(sys.executable), "scoreviz")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")
    print("| command | median (s) | worst (s) |")
    print("|---|---:|---:|")
    worst_all = 0.0
    for command in COMMANDS:
        times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            subprocess.run([exe, *([command] if command else []), "--help"], check=True,
                           stdout=subprocess.DEVNULL)
            times.append(time.perf_counter() - start)
        worst_all = max(worst_all, max(times))
        print(f"| `scoreviz {command + ' ' if command else ''}--help` | {statistics.median(times):.2f} | "
              f"{max(times):.2f} |")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"target under 1 s: {'met' if worst_all < 1 else 'NOT met'} (worst {worst_all:.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
