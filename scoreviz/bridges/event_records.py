"""The records of a TensorBoard event file, each checked against its checksums, and what was lost.

An event file is a TFRecord file: every record is an 8-byte little-endian length, a
masked CRC-32C of those 8 bytes, the data (one serialized `Event`), and a masked
CRC-32C of the data. TensorBoard's own reader stops at the first bad record without
saying so; this one says where and how much was lost:

- a record whose data fails its checksum (a flipped bit) is skipped and counted: its
  length was checked, so the records after it are read as usual;
- a length that fails its checksum, or that runs past the end of the file (a writer
  killed mid-record, a truncated copy), ends the reading: the rest of the file is lost,
  as no length after it can be trusted.

A record's data is read only after its length was checked against its checksum and
the size of the file, so a damaged length never makes the reader allocate more than
the file holds.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

from scoreviz.bridges import require
from scoreviz.errors import ScorevizError

_HEADER = 12  # length (8 bytes) + its masked CRC (4 bytes)
_FOOTER = 4   # the data's masked CRC
_MASK_DELTA = 0xA282EAD8


@dataclass
class Damage:
    """What could not be read from one event file."""

    path: Path
    size: int
    bad_records: list = field(default_factory=list)   # byte offsets of records skipped for a bad data checksum
    lost_bytes: int = 0                                # bytes in skipped records and after the end of reading
    stopped_at: int | None = None                      # offset where reading ended early, None if it reached the end
    reason: str = ""                                   # why it ended early

    def __bool__(self):
        return bool(self.bad_records) or self.stopped_at is not None

    def describe(self, events_read: int, steps=None) -> str:
        """One line: the file, what was read (`steps`: the first and last step read) and what was lost."""
        lost = []
        if self.bad_records:
            lost.append(f"{len(self.bad_records)} record(s) failing their checksum (the first at byte "
                        f"{self.bad_records[0]:,}) skipped")
        if self.stopped_at is not None:
            lost.append(f"bytes {self.stopped_at:,} to {self.size:,} ({self.reason})")
        read = f" (steps {steps[0]} to {steps[1]})" if steps else ""
        return (f"{self.path}: damaged event file: {events_read} event(s) read{read}, "
                f"{self.lost_bytes:,} of {self.size:,} bytes lost: " + "; ".join(lost))


def _masked_crc(crc32c, data) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def read_records(path, damage: Damage, purpose: str):
    """Yield the data of every record of the event file `path` whose checksums hold;
    fill `damage` with what was skipped or lost. ScorevizError if the file cannot be read."""
    crc32c = require("google_crc32c", "tensorboard", purpose).value
    path = Path(path)
    try:
        handle = open(path, "rb")
    except OSError as err:
        raise ScorevizError(f"{path}: cannot read the event file ({err.strerror or err})") from None
    with handle:
        size = os.fstat(handle.fileno()).st_size
        damage.size = size
        offset = 0
        while offset < size:
            header = handle.read(_HEADER)
            if len(header) < _HEADER:
                _stop(damage, offset, "truncated inside a record's header")
                return
            length, length_crc = struct.unpack("<QI", header)
            if _masked_crc(crc32c, header[:8]) != length_crc:
                _stop(damage, offset, "a record's length fails its checksum")
                return
            if length > size - offset - _HEADER - _FOOTER:
                _stop(damage, offset, f"a record of {length:,} bytes runs past the end of the file: truncated")
                return
            data = handle.read(length)
            footer = handle.read(_FOOTER)
            if len(data) < length or len(footer) < _FOOTER:  # the file shrank while it was read
                _stop(damage, offset, "truncated while it was read")
                return
            if _masked_crc(crc32c, data) != struct.unpack("<I", footer)[0]:
                damage.bad_records.append(offset)
                damage.lost_bytes += _HEADER + length + _FOOTER
            else:
                yield data
            offset += _HEADER + length + _FOOTER


def _stop(damage: Damage, offset: int, reason: str):
    damage.stopped_at, damage.reason = offset, reason
    damage.lost_bytes += damage.size - offset
