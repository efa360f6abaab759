"""A run in an object store: immutable HDF5 parts and a small manifest, and how to read them.

    RUN/scores.manifest/00000042.json   the manifest, version 42 (the highest number is the current one)
    RUN/scores.parts/00000007-9f2c.h5   a part: rows of the run, written once by writer 9f2c
    RUN/scores.h5                       a run uploaded whole (a local run copied as it is)

A part is a run file of the current schema (compressed, see schema.build_empty's
``packed``) holding a slice of every stream, with the row it starts at in its
``first_rows`` attribute; reading the parts of a manifest in order and appending
each one's new rows gives the run. A part is never replaced: its name holds its
writer's id, and it is created only where no object is.

A manifest is never replaced either: the writer creates the next version
(create-if-absent, which S3 and GCS do atomically) and then deletes the one
before. Two writers that race for the same version cannot both create it, so a
second writer is refused (or a writer that was taken over learns it) without
either one ever overwriting the other's data. It is small and of constant size
whatever the run's length: the parts are ranges of numbers, and the header
holds what a run list shows (config, names, row counts, last step).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field

from scoreviz.errors import ScorevizError
from scoreviz.store.schema import STREAMS

MANIFESTS = "scores.manifest"
PARTS = "scores.parts"
FORMAT = "scoreviz run manifest"
VERSION = 1
_MANIFEST_NAME = re.compile(rf"^{MANIFESTS}/(\d{{8,}})\.json$")
_PART_NAME = re.compile(rf"^{PARTS}/(\d{{8,}})-([0-9a-f]{{4,32}})\.h5$")
_MAX_BYTES = 4 << 20  # a manifest is a few KB; anything near this is not one


@dataclass
class Manifest:
    """One version of a run's manifest."""

    run: str  # the run's id, random, kept for its life (a run deleted and recorded again gets a new one)
    writer: dict  # the writer that wrote this version: id, host, pid, staging, since, job
    state: str  # "writing" or "closed"
    time: float  # when this version was written (the writer's clock, Unix seconds)
    interval: float  # the writer's upload interval (seconds)
    bins: int
    rows: dict  # {stream: rows published}
    parts: list  # [[writer id, first number, last number], ...] in order
    header: dict = field(default_factory=dict)  # config, env, tags, embedding_tags, layers, scalars, last_step
    # when the newest rows were published (the writer's clock): ``time`` moves on with every version,
    # heartbeats and compaction included; this only with new rows. 0 in a manifest written before it.
    published: float = 0.0
    version: int = 0  # from the object's name, not stored in it

    def to_bytes(self) -> bytes:
        body = {k: v for k, v in asdict(self).items() if k != "version"}
        return json.dumps({"format": FORMAT, "format_version": VERSION, **body}, separators=(",", ":"),
                          allow_nan=False).encode()

    def part_keys(self) -> list:
        """The keys of the parts, in order."""
        return [part_key(number, writer) for writer, first, last in self.parts for number in range(first, last + 1)]

    def published_at(self) -> float:
        """When the run's newest rows were published (Unix seconds, the writer's clock): what a
        reader shows as the run's last update."""
        return self.published or self.time

    def next_number(self) -> int:
        return max((last for _, _, last in self.parts), default=0) + 1


def manifest_key(version: int) -> str:
    return f"{MANIFESTS}/{version:08d}.json"


def part_key(number: int, writer: str) -> str:
    return f"{PARTS}/{number:08d}-{writer}.h5"


def manifest_versions(listing) -> list:
    """The manifest versions among a run's keys (relative to the run), lowest first."""
    found = []
    for key in listing:
        match = _MANIFEST_NAME.match(key)
        if match:
            found.append(int(match.group(1)))
    return sorted(found)


def is_part(key: str) -> bool:
    return bool(_PART_NAME.match(key))


def parse(data: bytes, version: int, where: str) -> Manifest:
    """A manifest from its bytes; ScorevizError naming ``where`` for anything that is not one."""
    if len(data) > _MAX_BYTES:
        raise ScorevizError(f"{where}: {len(data):,} bytes, not a scoreviz run manifest")
    try:
        body = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise ScorevizError(f"{where}: not a scoreviz run manifest (not JSON: {str(err)[:80]})") from None
    if not isinstance(body, dict) or body.get("format") != FORMAT:
        raise ScorevizError(f"{where}: not a scoreviz run manifest")
    if body.get("format_version") != VERSION:
        raise ScorevizError(f"{where}: a run manifest of format {body.get('format_version')!r:.20}; this "
                            f"scoreviz reads format {VERSION}: upgrade scoreviz")
    try:
        manifest = Manifest(run=_text(body["run"]), writer=_dict(body["writer"]), state=body["state"],
                            time=_number(body["time"]), interval=_number(body["interval"]),
                            bins=_count(body["bins"]), rows=_rows(body["rows"]), parts=_parts(body["parts"]),
                            header=_dict(body.get("header", {})), published=_number(body.get("published", 0)),
                            version=version)
        if manifest.state not in ("writing", "closed") or not 0 < manifest.bins <= 1 << 20:
            raise ValueError("state or bins")
        _text(manifest.writer.get("id"))
    except (KeyError, TypeError, ValueError) as err:
        raise ScorevizError(f"{where}: damaged scoreviz run manifest ({type(err).__name__}: {str(err)[:80]})") from None
    return manifest


def _text(value) -> str:
    if not isinstance(value, str) or not value or len(value) > 256:
        raise ValueError(f"{value!r:.40} is not a name")
    return value


def _number(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{value!r:.40} is not a number")
    return float(value)


def _count(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{value!r:.40} is not a count")
    return value


def _dict(value) -> dict:
    if not isinstance(value, dict):
        raise ValueError(f"{value!r:.40} is not an object")
    return value


def _rows(value) -> dict:
    value = _dict(value)
    return {stream: _count(value.get(stream, 0)) for stream in STREAMS}


def _parts(value) -> list:
    if not isinstance(value, list):
        raise ValueError("parts is not a list")
    out = []
    for item in value:
        if not isinstance(item, list) or len(item) != 3:
            raise ValueError(f"part range {item!r:.40}")
        writer, first, last = item
        if not re.fullmatch(r"[0-9a-f]{4,32}", str(writer)) or _count(first) > _count(last) or not first:
            raise ValueError(f"part range {item!r:.40}")
        out.append([writer, first, last])
    return out


__all__ = ["MANIFESTS", "PARTS", "Manifest", "is_part", "manifest_key", "manifest_versions", "parse", "part_key"]
