"""Static image export (PNG/SVG) through kaleido, only with a local Chromium.

kaleido 1.x drives a Chrome/Chromium it finds on the machine; it can also
download one, which this app never asks it to do (clusters are offline, and
fetching a browser behind the user's back is not acceptable). So export works
only when both kaleido and a Chromium are installed, and otherwise says
exactly what is missing. In-browser PNG (the graph's camera button) always
works, it needs no server support.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    """Path of an installed Chromium/Chrome (BROWSER_PATH wins), or None."""
    explicit = os.environ.get("BROWSER_PATH")
    if explicit and Path(explicit).is_file():
        return explicit
    for name in CHROMIUM_CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def unavailable_reason() -> str | None:
    """None when PNG/SVG export works, else a sentence saying what is missing."""
    if importlib.util.find_spec("kaleido") is None:
        return ("PNG/SVG export is unavailable: the 'kaleido' package is not installed "
                "(pip install kaleido; it uses the local Chromium, nothing is downloaded). "
                "HTML export works, and the camera button on the graph saves a PNG.")
    if find_chromium() is None:
        return ("PNG/SVG export is unavailable: kaleido is installed but no Chromium/Chrome was "
                "found (install one, or set BROWSER_PATH). HTML export works, and the camera "
                "button on the graph saves a PNG.")
    return None


def to_image(figure: dict, fmt: str) -> bytes:
    """Render a figure dict to PNG or SVG bytes with kaleido and the local Chromium.

    Raises RuntimeError with the reason when that is not possible.
    """
    reason = unavailable_reason()
    if reason:
        raise RuntimeError(reason)
    import kaleido

    # choreographer (kaleido's browser driver) looks at BROWSER_PATH first, so
    # pointing it at the local Chromium keeps it from looking elsewhere.
    os.environ.setdefault("BROWSER_PATH", find_chromium())
    layout = figure.get("layout", {})
    return kaleido.calc_fig_sync(
        figure,
        opts={"format": fmt, "width": layout.get("width") or 1100,
              "height": layout.get("height") or 600, "scale": 2 if fmt == "png" else 1},
        # kaleido takes plotly.js from the installed plotly package, but its
        # default MathJax comes from a CDN: switch MathJax off.
        kopts={"mathjax": False},
    )
