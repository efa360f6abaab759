"""`scoreviz export --format tensorboard|parquet`: the formats other than HTML, without Dash."""

from __future__ import annotations

from pathlib import Path

from scoreviz.errors import ScorevizError

FORMATS = ("tensorboard", "parquet")


def export_runs(run_dirs, fmt: str, out_dir, overwrite: bool = False) -> list[Path]:
    """Write `run_dirs` under `out_dir` as `fmt`; returns the paths written."""
    if fmt == "tensorboard":
        from scoreviz.bridges.tensorboard import export_tensorboard

        return export_tensorboard(run_dirs, out_dir, overwrite=overwrite)
    if fmt == "parquet":
        from scoreviz.bridges.parquet import export_parquet

        return export_parquet(run_dirs, out_dir, overwrite=overwrite)
    raise ScorevizError(f"export: format must be one of {', '.join(FORMATS)}, got {fmt!r}")
