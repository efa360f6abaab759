"""What a training loop passes to the Recorder, checked at the call.

Everything is checked on the training thread, before any work is queued, so the
writer thread never receives a value it cannot write; a bad value is a
ScorevizError at the line that passed it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import numbers
import operator

import numpy as np
import torch

from scoreviz.embeddings import MAX_SPECTRUM_DIM
from scoreviz.errors import ScorevizError
from scoreviz.store import NAME_BYTES, check_name
from scoreviz.store.schema import MAX_BINS

MAX_STEP = 2 ** 63 - 1  # steps are stored as int64
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DDP / DataParallel, torch.compile


def step(value) -> int:
    """A step: an integer in [0, 2**63 - 1] (int, numpy integer or one-element integer tensor)."""
    try:
        if isinstance(value, torch.Tensor):
            if value.numel() != 1 or value.is_floating_point() or value.is_complex() or value.device.type == "meta":
                raise TypeError
            value = value.item()
        if isinstance(value, (bool, np.bool_)):
            raise TypeError
        value = operator.index(value)
    except (TypeError, RuntimeError, ValueError):
        raise ScorevizError(f"step must be a non-negative integer, got {value!r:.60}") from None
    if not 0 <= value <= MAX_STEP:
        raise ScorevizError(f"step must be a non-negative integer below 2**63, got {value}")
    return value


def scores(x, name: str, where: str, what: str = "scores") -> torch.Tensor:
    """Scores (or other `what`) as a dense floating-point tensor with values (not on the meta device)."""
    if isinstance(x, np.ndarray):
        try:
            x = torch.from_numpy(np.ascontiguousarray(x))
        except (TypeError, ValueError):
            raise ScorevizError(f"{where}: {name} must hold floating-point {what}, got numpy dtype {x.dtype}") from None
    if not isinstance(x, torch.Tensor):
        raise ScorevizError(f"{where}: {name} must be a torch.Tensor (or numpy array) of {what}, got {type(x).__name__}")
    if getattr(x, "is_nested", False):
        raise ScorevizError(f"{where}: {name} is a nested tensor; pass a regular (padded) tensor")
    if x.layout != torch.strided:
        raise ScorevizError(f"{where}: {name} is a {x.layout} tensor; pass a dense tensor (x.to_dense())")
    if x.device.type == "meta":
        raise ScorevizError(f"{where}: {name} is on the meta device and holds no values")
    if not x.is_floating_point():
        raise ScorevizError(f"{where}: {name} must hold floating-point {what}, got dtype {x.dtype}")
    return x


def embeddings(z, name: str, spectrum: bool, like: torch.Tensor = None) -> torch.Tensor:
    """Embeddings (batch, dim), dim >= 1, floating point, with values; `like`: the first view,
    whose shape a second view must have. With `spectrum`, dim at most MAX_SPECTRUM_DIM."""
    z = scores(z, name, "log_embeddings", "embeddings")
    if z.dim() != 2 or z.shape[1] < 1:
        raise ScorevizError(f"log_embeddings: {name} must have shape (batch, dim) with dim >= 1, got "
                            f"{tuple(z.shape)}" + (" (flatten the extra dimensions into the batch)" if z.dim() > 2 else ""))
    if like is not None and z.shape != like.shape:
        raise ScorevizError(f"log_embeddings: z2 must have the shape of z {tuple(like.shape)}, got {tuple(z.shape)}")
    if spectrum and z.shape[1] > MAX_SPECTRUM_DIM:
        raise ScorevizError(f"log_embeddings: dim {z.shape[1]} is above {MAX_SPECTRUM_DIM}, the largest whose spectrum "
                            "the Recorder accumulates (a dim x dim matrix on the device); build the Recorder with "
                            "spectrum_window=0 to record std, uniformity and alignment only")
    return z


def window(value) -> int:
    """The spectrum window: a non-negative integer number of recorded steps (0: no spectrum)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ScorevizError(f"Recorder: spectrum_window must be a non-negative integer (recorded steps per spectrum, "
                            f"0 for none), got {value!r}")
    return int(value)


def name(value, what: str) -> str:
    """A tag or scalar name that the file can hold (non-empty, valid UTF-8, at most 256 bytes)."""
    return check_name(value, what)


def layer_name(module_name: str) -> str:
    """A module's name as a layer name the file can hold: wrapper prefixes dropped, and a
    name too long for the file shortened, keeping it unique with a hash of the whole name."""
    for prefix in _WRAPPER_PREFIXES:
        while module_name.startswith(prefix):
            module_name = module_name[len(prefix):]
    module_name = module_name or "(root)"
    raw = module_name.replace("\x00", "\\x00").encode("utf-8", "backslashreplace")
    if len(raw) <= NAME_BYTES:
        return raw.decode("utf-8")
    digest = hashlib.sha1(raw).hexdigest()[:12]
    return raw[:NAME_BYTES - 16].decode("utf-8", "ignore") + "..." + digest


def tag_names(tags, what: str) -> frozenset:
    """A set of tag names from an iterable of strings (a lone string is refused: it is iterable too)."""
    try:
        names = frozenset(tags) if not isinstance(tags, str) else None
    except TypeError:
        names = None
    if names is None:
        raise ScorevizError(f"Recorder: {what} must be an iterable of tag names, got {tags!r}")
    return frozenset(name(tag, f"Recorder: {what}: tag") for tag in names)


def scalar(value, key: str):
    """A scalar: a real number, or a one-element real tensor (left on its device)."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1 or value.is_complex() or value.device.type == "meta" or value.layout != torch.strided:
            raise ScorevizError(f"log_scalars: {key} must be a single real number, got a tensor of shape "
                                f"{tuple(value.shape)} ({value.dtype}, {value.device})")
        return value.detach().reshape(())
    if isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)):
        try:
            return float(value)
        except OverflowError:
            raise ScorevizError(f"log_scalars: {key} is too large for a 64-bit float") from None
    raise ScorevizError(f"log_scalars: {key} must be a number or a one-element tensor, got {type(value).__name__}")


def temperature(value) -> float:
    if isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)):
        value = float(value)
        if math.isfinite(value) and value > 0:
            return value
    raise ScorevizError(f"log_logits: temperature must be a positive finite number, got {value!r}")


def positive_int(value, what: str, most: int = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ScorevizError(f"Recorder: {what} must be a positive integer, got {value!r}")
    if most is not None and value > most:
        raise ScorevizError(f"Recorder: {what} must be at most {most}, got {value}")
    return int(value)


def bins(value) -> int:
    return positive_int(value, "bins", MAX_BINS)


def flush_secs(value) -> float:
    """Seconds between writes: finite, at least 0.01 (no busy writer) and at most a day."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool) and 0.01 <= float(value) <= 86400:
        return float(value)
    raise ScorevizError(f"Recorder: flush_secs must be a number of seconds from 0.01 to 86400, got {value!r}")


def upload_secs(value) -> float:
    """Seconds between two publishes of a run recorded to a URL (see scoreviz.store.publish)."""
    from scoreviz.store.publish import MAX_UPLOAD_SECS, MIN_UPLOAD_SECS

    if isinstance(value, numbers.Real) and not isinstance(value, bool) and \
            MIN_UPLOAD_SECS <= float(value) <= MAX_UPLOAD_SECS:
        return float(value)
    raise ScorevizError(f"Recorder: upload_secs must be a number of seconds from {MIN_UPLOAD_SECS:g} to "
                        f"{MAX_UPLOAD_SECS:g}, got {value!r}")


_RECORDER_OPTIONS = {
    "every": lambda value: positive_int(value, "every"),
    "bins": bins,
    "flush_secs": flush_secs,
    "unbounded_tags": lambda value: tag_names(value, "unbounded_tags"),
    "spectrum_window": window,
    "upload_secs": lambda value: upload_secs(value),
    "storage_options": lambda value: _storage_options(value),
}


def recorder_options(options: dict, where: str, run_config=None) -> dict:
    """Keyword options (and a config, unless None) for a Recorder built later (by a training
    framework's callback), checked now with the Recorder's own rules; a ScorevizError
    names a bad or unknown one."""
    unknown = sorted(set(options) - set(_RECORDER_OPTIONS))
    if unknown:
        raise ScorevizError(f"{where}: unknown option {unknown[0]!r}; the Recorder's options are "
                            f"{', '.join(_RECORDER_OPTIONS)}")
    checks = [(_RECORDER_OPTIONS[name], value) for name, value in options.items()]
    for check, value in checks + ([(config, run_config)] if run_config is not None else []):
        try:
            check(value)
        except ScorevizError as err:
            raise ScorevizError(f"{where}: {err}") from None
    return dict(options)


def _storage_options(value):
    from scoreviz.store.objects import check_options

    return check_options(value, "Recorder")


def config(value) -> dict:
    """The run's settings as a JSON object; values JSON cannot hold become strings."""
    if value is None:
        return {}
    if isinstance(value, argparse.Namespace):
        value = vars(value)
    if not isinstance(value, dict):
        raise ScorevizError(f"Recorder: config must be a dict or an argparse.Namespace, got {type(value).__name__}")
    try:
        return json.loads(json.dumps(value, default=str))
    except (TypeError, ValueError, RecursionError) as err:
        raise ScorevizError(f"Recorder: config cannot be stored as JSON ({err})") from None
