"""Take screenshots of the app (docs/views/VIEW.png) with the browser-test tooling.

    python docs/make_screenshot.py RUNS_DIR [--view curves] [--out docs/views/curves.png]
    python docs/make_screenshot.py RUNS_DIR --all docs/views      # every view (the README's gallery)

The views of docs/views/ were taken on the demo's runs (100 epochs each):
    scoreviz demo --no-serve --out /tmp/demo
    python docs/make_screenshot.py /tmp/demo --all docs/views

The grouped ones on a sweep of real trainings, moco_m 0.9 and 0.99 x 3 seeds, 20 epochs each:
    for m in 0.9 0.99; do for s in 0 1 2; do
        scoreviz train --dataset digits --epochs 20 --moco-m $m --seed $s --run-dir /tmp/sweep/m$m-s$s --quiet
    done; done
    python docs/make_screenshot.py /tmp/sweep --view curves --height 1800 --out docs/views/curves_grouped.png \
        --extra "stats=pos_mean&stats=neg_mean&stats=neg_sample_var&stats=knn_acc&group=moco_m&band=std&tag=raw"
    python docs/make_screenshot.py /tmp/sweep --view waterfall --extra "group=moco_m&key=moco_m&tag=raw" \
        --height 1400 --out docs/views/waterfall_grouped.png
    python docs/make_screenshot.py /tmp/sweep --view distribution --extra "group=moco_m&step=150&tag=raw" \
        --height 2900 --out docs/views/histograms_grouped.png
    scoreviz export /tmp/sweep --group-by moco_m --out /tmp/sweep.html
    python docs/make_screenshot.py /tmp/sweep.html --html --out docs/views/report_grouped.png --height 1400
(docs/make_grouped_sweep.py writes a synthetic sweep of the same shape in seconds, without training.)

Serves RUNS_DIR on 127.0.0.1 exactly as the browser tests do, opens every
readable run in headless Debian Chromium, waits until the figures are drawn
and saves a PNG of the page.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


# Each view, with the query that shows it at its most telling.
VIEWS = {
    "curves": "stats=pos_mean&stats=neg_mean&stats=neg_sample_var&stats=knn_acc",
    "distribution": "tag=raw&step=300",
    "waterfall": "key=pos_alpha&tag=raw",
    "gradients": "",
    "representation": "tag=raw",
    "health": "tag=raw",
    "compare": "tag=raw&at=300",
}
HEIGHTS = {"curves": 1800, "distribution": 2350, "waterfall": 1400, "gradients": 2200, "representation": 4300,
           "health": 700, "compare": 1300}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs_dir")
    parser.add_argument("--view", default="curves")
    parser.add_argument("--extra", help="more query string, e.g. 'log=log&smooth=0.6' (default: the view's "
                                        "own, as in the gallery)")
    parser.add_argument("--out", default=str(ROOT / "docs" / "views" / "curves.png"))
    parser.add_argument("--height", type=int, help="window height (default: the view's own, as in the gallery)")
    parser.add_argument("--graph", metavar="NAME", help="save only this graph (e.g. hist for hist-graph), "
                                                        "not the whole page")
    parser.add_argument("--all", metavar="FOLDER", help="one PNG per view into FOLDER (VIEW.png)")
    parser.add_argument("--html", action="store_true", help="RUNS_DIR is an HTML file (a report of "
                                                            "scoreviz export): a screenshot of it, no server")
    args = parser.parse_args(argv)
    # one view alone looks as it does in the gallery unless told otherwise
    args.extra = VIEWS.get(args.view, "") if args.extra is None else args.extra
    args.height = args.height or HEIGHTS.get(args.view, 1300)
    if args.html:
        return report_screenshot(Path(args.runs_dir), args.out, args.height)
    if args.all:
        Path(args.all).mkdir(parents=True, exist_ok=True)
        for view, extra in VIEWS.items():
            main([args.runs_dir, "--view", view, "--extra", extra, "--out", str(Path(args.all) / f"{view}.png"),
                  "--height", str(HEIGHTS.get(view, 1300))])
        return 0

    from test_app_browser import chromium, serving, traces, wait_for

    from app.runs import RunData

    data = RunData(args.runs_dir, warm=False)
    runs = [r for r in data.run_ids() if not data.info(r).get("error")]
    query = urlencode([("runs", r) for r in runs] + [("view", args.view)])
    if args.extra:
        query += "&" + args.extra
    graph = f"{args.graph}-graph" if args.graph else {
        "curves": "curves-graph", "distribution": "hist-graph", "gradients": "grad-heatmap-graph",
        "waterfall": "waterfall-graph", "representation": "spectrum-graph", "compare": "compare-graph"}.get(args.view)
    with serving(args.runs_dir, refresh=60) as url, chromium(width=1400, height=args.height) as driver:
        driver.get(f"{url}?{query}")
        if graph:
            wait_for(driver, lambda d: len(traces(d, graph) or []) >= 1, timeout=120)
        elif args.view == "health":
            wait_for(driver, lambda d: d.find_elements("css selector", "#health-table table"), timeout=120)
        wait_for(driver, lambda d: not d.find_elements("css selector", '[data-dash-is-loading="true"]'),
                 timeout=120)
        # the run table complete: every header read and every run's steps counted
        wait_for(driver, lambda d: "reading" not in d.find_element("id", "run-table").text
                 and "reading" not in d.find_element("id", "last-refresh").text, timeout=120)
        driver.execute_script("return new Promise(r => setTimeout(r, 1500))")
        if args.graph:
            box = driver.find_element("css selector", f"#{graph}")
            driver.execute_script("arguments[0].scrollIntoView()", box)
            box.screenshot(args.out)
        else:
            driver.save_screenshot(args.out)
    print(f"wrote {args.out} ({len(runs)} runs, view {args.view})")
    return 0


def report_screenshot(report: Path, out: str, height: int) -> int:
    """A screenshot of the top of an exported HTML report opened from disk, once its figures are drawn."""
    from test_app_browser import chromium, wait_for

    with chromium(width=1400, height=height) as driver:
        driver.get(report.resolve().as_uri())
        wait_for(driver, lambda d: d.execute_script(
            "return document.querySelectorAll('.js-plotly-plot').length > 0 && "
            "Array.from(document.querySelectorAll('.js-plotly-plot')).every(g => g._fullLayout)"), timeout=120)
        driver.execute_script("return new Promise(r => setTimeout(r, 1500))")
        driver.save_screenshot(out)
    print(f"wrote {out} (report {report})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
