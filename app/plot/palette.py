"""One colour per run, derived from the run itself, the same in every view and in the report.

A run's colour comes from a hash of its name (the folder name), never from the
order runs were picked, listed or sorted in a figure: the same runs get the same
colours on every page load, in every view, after the waterfall is reordered, and
in `scoreviz export`. Two of the runs shown that hash to the same colour are
told apart by probing: the one whose id sorts later takes the next free colour.
So a colour depends on the run and on which other runs are shown with it, never
on any order. Groups of runs (``moco_m=0.99``) get their colours the same way,
from the group's name.
"""

from __future__ import annotations

import hashlib
from typing import Callable, Iterable

# Tableau 10 (matplotlib's default cycle) without olive (faint on white, near green), cyan (near
# blue) and grey and black (they read as a reference line or a threshold, which the figures draw
# in grey). Few colours that never look alike beat many that do: with probing (run_colors), up to
# 7 runs shown together never share or nearly share a colour.
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2")
# The group that holds the groups past the ones a view draws ("N other groups",
# scoreviz.groups.group_runs(most=...)): a colour that no run or group ever takes, so those runs
# never read as one of the groups drawn beside them (with 20 groups every colour of PALETTE is
# used about three times). Not grey or black (reference lines) and far in hue from every colour
# of PALETTE: a dark teal, between its blue and its green and darker than both.
OTHERS_COLOR = "#00897b"


def run_key(run_id: str) -> str:
    """What a run's colour is derived from: its folder name, the last part of its id."""
    return str(run_id).rstrip("/").rsplit("/", 1)[-1]


def slot(run_id: str, size: int = len(PALETTE), key: Callable[[str], str] = run_key) -> int:
    """The palette index a run's name (``key(run_id)``) hashes to (stable across processes, unlike hash())."""
    digest = hashlib.blake2b(key(run_id).encode("utf-8", "backslashreplace"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % size


def run_colors(run_ids: Iterable[str], palette=PALETTE, key: Callable[[str], str] = run_key) -> dict:
    """``{run id: colour}`` for the runs shown together.

    Each run takes the colour its name hashes to; where two collide, the run whose
    id sorts first keeps it and the other takes the next free one. More runs than
    colours reuse colours (every colour once before any twice).
    """
    ids = sorted(dict.fromkeys(str(r) for r in run_ids))
    taken: dict[int, int] = {}  # palette index -> runs using it
    out = {}
    for run_id in ids:
        start = slot(run_id, len(palette), key)
        fewest = min(taken.get(i, 0) for i in range(len(palette)))
        index = next(i % len(palette) for i in range(start, start + len(palette))
                     if taken.get(i % len(palette), 0) == fewest)
        taken[index] = taken.get(index, 0) + 1
        out[run_id] = palette[index]
    return out


def group_colors(groups: Iterable) -> dict:
    """``{group name: colour}`` for the groups shown together (scoreviz.groups.Group), chosen as
    run_colors chooses a run's: from the whole name (``moco_m=0.99``; it may hold a "/"), not from
    the run count, so a group keeps its colour while its runs come and go. The group of the groups
    past the ones drawn ("N other groups", its ``folded`` > 0) is always OTHERS_COLOR."""
    groups = list(groups)
    colors = run_colors([g.name for g in groups if not g.folded], PALETTE, key=str)
    colors.update({g.name: OTHERS_COLOR for g in groups if g.folded})
    return colors


def fallback(index: int) -> str:
    """The colour of a trace no ``colors`` mapping names (the ``index``-th such trace)."""
    return PALETTE[index % len(PALETTE)]


def transparent(color: str, alpha: float) -> str:
    """``#rrggbb`` as an rgba() colour with opacity ``alpha``."""
    red, green, blue = (int(color.lstrip("#")[i:i + 2], 16) for i in (0, 2, 4))
    return f"rgba({red},{green},{blue},{alpha})"


def shades(color: str, n: int) -> list[str]:
    """``n`` shades of one run's ``color``: the colour itself, then ever darker ones, so the tags
    of one run read as that run's (the raw-vs-transformed figure)."""
    red, green, blue = (int(color.lstrip("#")[i:i + 2], 16) for i in (0, 2, 4))
    out = []
    for i in range(n):
        keep = 1.0 - 0.45 * i / max(1, n - 1) if n > 1 else 1.0
        out.append("#" + "".join(f"{int(round(c * keep)):02x}" for c in (red, green, blue)))
    return out
