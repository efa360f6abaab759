"""Command-line options of `scoreviz import-tensorboard`, without numpy or tensorboard,
so its ``--help`` answers at once."""

from __future__ import annotations

import argparse

DEFAULT_BINS = 100  # histogram bins of an imported run when the event files do not say


def add_import_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("logdir", metavar="LOGDIR", help="a TensorBoard log folder (searched recursively)")
    parser.add_argument("--out", default="runs", help="folder to write the runs into (default runs)")
    parser.add_argument("--bins", type=int, default=None,
                        help=f"histogram bins over [-1, 1] (default: a scoreviz export's own, else {DEFAULT_BINS})")
    parser.add_argument("--partial", action="store_true",
                        help="import what can be read of damaged event files, and leave out tags and steps the "
                             "Recorder refuses, each reported; without it such a run is not imported and the "
                             "command fails")
    return parser
