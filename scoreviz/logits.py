"""Where the positives are in a logits matrix: the layouts `Recorder.log_logits` takes.

    "first"     MoCo (batch, 1 + K): column 0 the positive, the other K columns its negatives
    "diagonal"  in-batch (batch, batch) as CLIP or InfoNCE over a batch (or (batch, batch + m),
                extra candidates appended, as sentence-transformers' hard negatives): row i's
                positive in column i, every other column its negatives
    "ntxent"    SimCLR's NT-Xent (2B, 2B) over both views stacked: row i's positive in column
                i + B (i - B for the second half), column i (its self-similarity) left out, the
                other 2B - 2 columns its negatives
    a bool mask of the logits' shape: True the positives (any number per row, SupCon's labels),
                the rest negatives, but the entries of `ignore` (SupCon's self-similarity:
                ignore="diagonal")

A square logits matrix is refused without an explicit ``positives=``: read as MoCo's
layout, in-batch logits would record a silently wrong number (the first column's scores
as positives), the one outcome a recorder must never give. Every split is made without a
host sync: indices are built once per shape and device.
"""

from __future__ import annotations

import functools

import torch

from scoreviz.errors import ScorevizError

LAYOUTS = ("first", "diagonal", "ntxent")
_LAYOUTS_TEXT = ("'first' (MoCo (B, 1 + K): column 0 the positive), 'diagonal' (in-batch (B, B), CLIP/InfoNCE: "
                 "row i's positive in column i), 'ntxent' (SimCLR (2B, 2B): row i's positive in column i +- B, "
                 "column i left out) or a bool mask of the positives (SupCon)")


def split(logits: torch.Tensor, positives, ignore=None):
    """(pos, neg, None) for the layouts with one positive per row, pos (rows,) and neg (rows,
    negatives); (None, None, (positives mask, negatives mask)) for a mask. ScorevizError for a
    shape the layout cannot have, naming the argument."""
    if positives is None:
        if logits.dim() == 2 and logits.shape[0] == logits.shape[1]:
            raise ScorevizError(f"log_logits: logits of shape {tuple(logits.shape)} are square, so where the "
                                f"positives are must be said: pass positives= {_LAYOUTS_TEXT}")
        positives = "first"
    if isinstance(positives, str):
        if ignore is not None:
            raise ScorevizError(f"log_logits: ignore= goes with a positives mask, not with positives={positives!r}")
        if positives == "first":
            return (*_first(logits), None)
        if positives == "diagonal":
            return (*_diagonal(logits), None)
        if positives == "ntxent":
            return (*_ntxent(logits), None)
    if isinstance(positives, torch.Tensor):
        return None, None, _masks(logits, positives, ignore)
    raise ScorevizError(f"log_logits: positives must be {_LAYOUTS_TEXT}, got {positives!r:.60}")


def _first(logits):
    if logits.dim() != 2 or logits.shape[1] < 2:
        raise ScorevizError(f"log_logits: positives='first' needs logits of shape (batch, 1 + negatives) with column "
                            f"0 the positive, got {tuple(logits.shape)}")
    return logits[:, 0], logits[:, 1:]


def _diagonal(logits):
    if logits.dim() != 2 or logits.shape[0] < 1 or logits.shape[1] < max(2, logits.shape[0]):
        raise ScorevizError(f"log_logits: positives='diagonal' needs logits of shape (batch, batch) (or (batch, "
                            f"batch + extra candidates)) with batch >= 2 columns, got {tuple(logits.shape)}")
    n, m = logits.shape
    if n == m:
        return logits.diagonal(), _off_diagonal(logits)
    rows, others = _indices(n, m, 0, logits.device)
    return logits[rows, rows], logits.gather(1, others)


def _ntxent(logits):
    if logits.dim() != 2 or logits.shape[0] != logits.shape[1] or logits.shape[0] % 2 or logits.shape[0] < 4:
        raise ScorevizError(f"log_logits: positives='ntxent' needs square (2B, 2B) logits of both views stacked, "
                            f"B >= 2, got {tuple(logits.shape)}")
    n = logits.shape[0]
    rows, others = _indices(n, n, n // 2, logits.device)
    return logits[rows, (rows + n // 2) % n], logits.gather(1, others)


@functools.lru_cache(maxsize=16)
def _indices(n: int, m: int, partner: int, device):
    """(the rows (n,), for each row the columns of its negatives (n, m - 1 or m - 2)): every column
    but the row's own and, with a `partner` offset, the partner's (i + partner mod n)."""
    rows = torch.arange(n, device=device)
    columns = torch.arange(m, device=device).expand(n, m)
    keep = columns != rows[:, None]
    if partner:
        keep &= columns != ((rows + partner) % n)[:, None]
    width = m - (2 if partner else 1)
    return rows, columns[keep].view(n, width)  # built once per shape (the boolean select syncs a GPU)


def _off_diagonal(square: torch.Tensor) -> torch.Tensor:
    """The (n, n - 1) entries off the diagonal of an (n, n) tensor, row by row.

    A reshape, not a boolean mask: masked_select would wait for the device.
    """
    n = square.shape[0]
    return square.flatten()[1:].view(n - 1, n + 1)[:, :-1].reshape(n, n - 1)


def _masks(logits, positives, ignore):
    """(positives, negatives): bool masks of the logits' shape, on their device."""
    if positives.dtype != torch.bool:
        raise ScorevizError(f"log_logits: a positives mask must be a bool tensor (mask.bool()), got dtype "
                            f"{positives.dtype}")
    if positives.shape != logits.shape or logits.dim() != 2:
        raise ScorevizError(f"log_logits: the positives mask must have the logits' shape, a (rows, columns) matrix; "
                            f"got a mask of {tuple(positives.shape)} for logits of {tuple(logits.shape)}")
    positives = positives.to(logits.device)
    square = logits.shape[0] == logits.shape[1]
    if ignore is None and square:
        raise ScorevizError("log_logits: square logits with a positives mask: say what the diagonal is with ignore=: "
                            "'diagonal' when column i of row i is the row's own sample (SupCon's self-similarity, "
                            "neither positive nor negative), False when it is a score like any other (e.g. "
                            "image-text logits), or a bool mask of the entries to leave out")
    if ignore is None or ignore is False:
        return positives, ~positives
    if isinstance(ignore, str) and ignore == "diagonal":
        if not square:
            raise ScorevizError(f"log_logits: ignore='diagonal' needs square logits, got {tuple(logits.shape)}")
        left_out = torch.eye(logits.shape[0], dtype=torch.bool, device=logits.device)
    elif isinstance(ignore, torch.Tensor) and ignore.dtype == torch.bool and ignore.shape == logits.shape:
        left_out = ignore.to(logits.device)
    else:
        raise ScorevizError(f"log_logits: ignore must be 'diagonal', False or a bool mask of the logits' shape "
                            f"{tuple(logits.shape)}, got {ignore!r:.60}")
    return positives & ~left_out, ~positives & ~left_out
