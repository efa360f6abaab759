"""`scoreviz serve` and `scoreviz export`: argparse pieces for scoreviz/cli.py.

Each command is an ``add_*_arguments(parser)`` / ``*_main(args)`` pair, so
scoreviz.cli can import this module only when one of these commands runs
(training code never loads Dash). ``python -m app.cli_commands serve|export``
runs them without the scoreviz CLI.
"""

from __future__ import annotations

import argparse
import math
import sys

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


def serve_main(args: argparse.Namespace) -> int:
    """Run the server until interrupted."""
    import sys

    # Dash loads IPython when it is installed (for its notebook mode), a third of a second of
    # the server's start; this process is a server, never a notebook, so it goes without.
    sys.modules.setdefault("IPython", None)
    from app import serve
    from scoreviz.store.remote import local_roots

    # a URL (s3://bucket/sweep/) is served from its local copy, which a thread keeps up to date
    # at the page's refresh interval: one listing, the manifests and parts that changed
    serve(local_roots(args.runs_dir, args.refresh), host=args.host, port=args.port, refresh=args.refresh,
          debug=args.debug, allow_hosts=args.allow_host, verbose=args.verbose)
    return 0


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `scoreviz export RUN_DIR... --out report.html`."""
    parser.add_argument("run_dirs", metavar="RUN_DIR", nargs="+",
                        help="run folders to put in the report (or URLs: s3://bucket/runs/a)")
    parser.add_argument("--out", default=None, help="HTML file to write (default report.html); the folder to "
                                                    "write into for --format tensorboard or parquet (required)")
    parser.add_argument("--format", choices=("html", "tensorboard", "parquet"), default="html",
                        help="html: one report (default); tensorboard: event files, a folder per run, "
                             "under --out; parquet: one table per stream under --out")
    parser.add_argument("--force", action="store_true",
                        help="overwrite what --out already holds (the report; for tensorboard or parquet, "
                             "the runs' files under it)")
    grouped = parser.add_argument_group(
        "grouped report (html)", "with --group-by, RUN_DIR may also be a sweep's folder (every run below it) and "
        "the report shows groups instead of runs: grouped curves, the grouped 3D waterfall, each group's mean "
        "histograms at the last step and a table of groups with each statistic's final mean and band")
    grouped.add_argument("--group-by", action="append", default=[], metavar="KEY",
                         help="config key whose values form the groups (e.g. moco_m); repeatable, every other "
                              "key (seed...) is ignored")
    grouped.add_argument("--band", choices=("std", "sem", "minmax"), default="std",
                         help="the band around a group's mean: std, standard error or the min and max run")
    grouped.add_argument("--stat", action="append", default=[], metavar="NAME",
                         help="statistic to show (a score column such as neg_mean, or a scalar's name); "
                              "repeatable (default: pos_mean, neg_mean, neg_sample_var)")
    grouped.add_argument("--waterfall-stat", default="neg_sample_var", metavar="NAME",
                         help="the statistic of the 3D waterfall")


def export_main(args: argparse.Namespace) -> int:
    """Write the standalone HTML report, or the runs as TensorBoard event files or Parquet tables."""
    from scoreviz.store.objects import is_url

    if any(is_url(r) for r in args.run_dirs):  # runs in a store: from their local copies, brought up to date now
        from scoreviz.store.remote import local_roots

        args.run_dirs = [str(r) for r in local_roots(args.run_dirs, None)]
    if args.format != "html":
        from scoreviz.bridges.export import export_runs  # no Dash

        if args.out is None:  # a usage error: exit 2, as argparse does
            print(f"scoreviz export: error: --format {args.format} needs --out DIR, the folder to write into",
                  file=sys.stderr)
            raise SystemExit(2)
        for path in export_runs(args.run_dirs, args.format, args.out, overwrite=args.force):
            print(f"scoreviz: wrote {path}")
        return 0
    if args.group_by:
        from app.group_report import write_group_report

        out = write_group_report(args.run_dirs, args.out or "report.html", args.group_by, band=args.band,
                                 stats=args.stat, force=args.force, waterfall_stat=args.waterfall_stat)
        print(f"scoreviz: wrote {out}")
        return 0
    if args.stat or args.band != "std" or args.waterfall_stat != "neg_sample_var":
        print("scoreviz export: error: --band, --stat and --waterfall-stat need --group-by KEY", file=sys.stderr)
        raise SystemExit(2)
    from app.export import write_report

    out = write_report(args.run_dirs, args.out or "report.html", force=args.force)
    print(f"scoreviz: wrote {out}")
    return 0


# The pairs scoreviz.cli wires up: command -> (add_arguments, main, help).
COMMANDS = {
    "serve": (add_serve_arguments, serve_main, "serve the app for every run below the RUNS_DIR folders"),
    "export": (add_export_arguments, export_main, "write one standalone HTML report of some runs (or of a "
               "sweep's groups, --group-by)"),
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.cli_commands")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (add_arguments, _, help_text) in COMMANDS.items():
        add_arguments(sub.add_parser(name, help=help_text))
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command][1](args)
    except ValueError as err:  # ScorevizError: a bad run, said plainly
        print(f"scoreviz {args.command}: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
