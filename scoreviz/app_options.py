"""The options of `scoreviz serve` and `scoreviz export` (argparse only).

scoreviz.cli builds its parser from these and runs app.cli_commands only when one of these
commands runs: the library reaches the app (app/) lazily, the one arrow up, so training code and
every --help never load Dash.
"""

from __future__ import annotations

import argparse
import math

# The page re-reads runs at most this often and at least once a day (a browser
# timer of more than 2**31 ms fires at once, so the bound is also a safety).
MIN_REFRESH, MAX_REFRESH = 0.5, 86400.0


def port_number(text: str) -> int:
    """argparse type of --port: 1 to 65535."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (1 to 65535)") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number (1 to 65535)")
    return port


def refresh_seconds(text: str) -> float:
    """argparse type of --refresh: finite seconds from MIN_REFRESH to MAX_REFRESH."""
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(seconds) or not MIN_REFRESH <= seconds <= MAX_REFRESH:
        raise argparse.ArgumentTypeError(f"{text} must be a number of seconds from {MIN_REFRESH:g} "
                                         f"to {MAX_REFRESH:g}")
    return seconds


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `scoreviz serve RUNS_DIR...`."""
    parser.add_argument("runs_dir", metavar="RUNS_DIR", nargs="+",
                        help="folders holding run folders (searched recursively), or globs of them "
                             "('runs/sweep-*', quoted so the shell leaves it), or URLs (s3://bucket/sweep/, "
                             "credentials from the store's chain); with several, run names are "
                             "paths from their common folder (runs/a, other/a)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1: this machine only; anything else "
                             "is reachable from other machines and prints a warning)")
    parser.add_argument("--port", type=port_number, default=8050, help="port (default 8050)")
    parser.add_argument("--refresh", type=refresh_seconds, default=5.0, metavar="SECONDS",
                        help=f"re-read growing runs every SECONDS ({MIN_REFRESH:g} to {MAX_REFRESH:g}, "
                             "default 5)")
    parser.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                        help="also answer requests whose Host header is NAME (e.g. the name a reverse "
                             "proxy uses); repeatable. localhost, 127.0.0.1, [::1] and --host always are")
    parser.add_argument("--debug", action="store_true",
                        help="Dash debug mode (its development server); refused unless --host is a loopback address")
    parser.add_argument("--verbose", action="store_true", help="print one line per request on stderr")


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `scoreviz export RUN_DIR... --out report.html`."""
    parser.add_argument("run_dirs", metavar="RUN_DIR", nargs="+",
                        help="run folders to put in the report (or folders of runs: every run below them; "
                             "or URLs: s3://bucket/runs/a)")
    parser.add_argument("--out", default=None, help="HTML file to write (default report.html); the folder to "
                                                    "write into for --format tensorboard or parquet (required)")
    parser.add_argument("--format", choices=("html", "tensorboard", "parquet"), default="html",
                        help="html: one report (default); tensorboard: event files, a folder per run, "
                             "under --out; parquet: one table per stream under --out")
    parser.add_argument("--force", action="store_true",
                        help="overwrite what --out already holds (the report; for tensorboard or parquet, "
                             "the runs' files under it)")
    grouped = parser.add_argument_group(
        "grouped report (html)", "with --group-by the report shows groups instead of runs, as the app does: "
        "grouped curves, the grouped 3D waterfall, each group's mean histograms at the last step and a table "
        "of groups with each statistic's final mean and band, with every run's health and total gradient norm")
    grouped.add_argument("--group-by", action="append", default=[], metavar="KEY",
                         help="config key whose values form the groups (e.g. moco_m); repeatable, every other "
                              "key (seed...) is ignored")
    grouped.add_argument("--band", choices=("std", "sem", "minmax"), default=None,
                         help="the band around a group's mean: std (the default), standard error or the min and "
                              "max run")
    grouped.add_argument("--stat", action="append", default=[], metavar="NAME",
                         help="statistic to show (a score column such as neg_mean, or a scalar's name); "
                              "repeatable (default: pos_mean, neg_mean, neg_sample_var)")
    grouped.add_argument("--waterfall-stat", default=None, metavar="NAME",
                         help="the statistic of the 3D waterfall (default: neg_sample_var)")


# The commands scoreviz.cli wires up: command -> (add_arguments, "module:main", help).
COMMANDS = {
    "serve": (add_serve_arguments, "app.cli_commands:serve_main",
              "serve the app for every run below the RUNS_DIR folders"),
    "export": (add_export_arguments, "app.cli_commands:export_main",
               "write one standalone HTML report of some runs (or of a sweep's groups, --group-by)"),
}
