"""`scoreviz serve` and `scoreviz export`: what they run (their options: scoreviz.app_options).

scoreviz.cli imports this module only when one of these commands runs (training code never
loads Dash). ``python -m app.cli_commands serve|export`` runs them without the scoreviz CLI.
"""

from __future__ import annotations

import argparse
import sys

from scoreviz.app_options import COMMANDS


def serve_main(args: argparse.Namespace) -> int:
    """Run the server until interrupted."""
    import sys

    # Dash loads IPython when it is installed (for its notebook mode), a third of a second of
    # the server's start; this process is a server, never a notebook, so it goes without.
    sys.modules.setdefault("IPython", None)
    from app import describe_runs, serve
    from scoreviz.store.remote import local_roots

    # a URL (s3://bucket/sweep/) is served from its local copy, which a thread keeps up to date
    # at the page's refresh interval: one listing, the manifests and parts that changed; the page
    # and the console name the URL the user gave (without credentials), not the copy's folder
    serve(local_roots(args.runs_dir, args.refresh), host=args.host, port=args.port, refresh=args.refresh,
          debug=args.debug, allow_hosts=args.allow_host, verbose=args.verbose, label=describe_runs(args.runs_dir))
    return 0


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
    if not args.group_by and (args.stat or args.band or args.waterfall_stat):
        print("scoreviz export: error: --band, --stat and --waterfall-stat need --group-by KEY", file=sys.stderr)
        raise SystemExit(2)
    from app.report import write_report

    out = write_report(args.run_dirs, args.out or "report.html", force=args.force, group_by=args.group_by,
                       band=args.band, stats=args.stat, waterfall_stat=args.waterfall_stat)
    print(f"scoreviz: wrote {out}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.cli_commands")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (add_arguments, _, help_text) in COMMANDS.items():
        add_arguments(sub.add_parser(name, help=help_text))
    args = parser.parse_args(argv)
    try:
        return {"serve": serve_main, "export": export_main}[args.command](args)
    except ValueError as err:  # ScorevizError: a bad run, said plainly
        print(f"scoreviz {args.command}: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
