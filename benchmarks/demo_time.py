"""How long `scoreviz demo` trains, as a newcomer runs it: both runs side by side.

    python benchmarks/demo_time.py [--epochs 100] [--out /tmp/scoreviz-demo-time]

Runs `scoreviz demo --no-serve` into an empty folder (training exactly as the demo
does while it serves, without the server) and prints the wall time, the seconds
per epoch of the two runs together, the time to the first recorded step, and
the load average around it: on a shared machine the number depends on what else
runs, so it is printed with it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path


def first_step_seconds(out: Path, start: float, found: dict):
    """Seconds until both runs have a recorded step (what the page can first draw)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import scoreviz

    while "seconds" not in found:
        try:
            if all(len(scoreviz.open_run(out / name).steps()) for name in ("baseline", "ft")):
                found["seconds"] = time.monotonic() - start
        except ValueError:
            pass
        time.sleep(0.5)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--out", default="/tmp/scoreviz-demo-time")
    args = parser.parse_args(argv)
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    exe = shutil.which("scoreviz") or os.path.join(os.path.dirname(sys.executable), "scoreviz")
    load_before = os.getloadavg()
    start = time.monotonic()
    found = {}
    threading.Thread(target=first_step_seconds, args=(out, start, found), daemon=True).start()
    subprocess.run([exe, "demo", "--no-serve", "--out", str(out), "--epochs", str(args.epochs)], check=True)
    seconds = time.monotonic() - start
    load_after = os.getloadavg()
    print(f"| epochs per run | wall time | s per epoch (both runs) | first step on disk | load avg before | "
          f"load avg after (1, 5, 15 min) | CPUs |")
    print("|---:|---:|---:|---:|---|---|---:|")
    print(f"| {args.epochs} | {seconds / 60:.1f} min | {seconds / args.epochs:.2f} | "
          f"{found.get('seconds', float('nan')):.0f} s | {load_before[0]:.1f} | "
          f"{', '.join(f'{x:.1f}' for x in load_after)} | {os.cpu_count()} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
