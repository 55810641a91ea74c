"""The framing shared by values other replicas read (features, tracking snapshots): raw bytes
after a small JSON header, never pickle.

    MAGIC (4 bytes) | header length (uint32 LE) | header (JSON, UTF-8) | payload

`unframe` checks only the framing; each format checks its own header fields (version, model,
key, dtypes, shapes), then `check_payload` the payload's size and xxh3 checksum.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import xxhash

_HEADER_LEN = struct.Struct("<I")
MAX_HEADER = 64 * 1024


class CorruptEntry(ValueError):
    """A stored value that is not ours to use (foreign model, other key, truncated, corrupt)."""


def frame(magic: bytes, header: dict[str, Any], payload: bytes) -> bytes:
    """magic | length | header (with the payload's checksum added as "xxh3") | payload."""
    text = json.dumps({**header, "xxh3": xxhash.xxh3_64_hexdigest(payload)}, separators=(",", ":"))
    data = text.encode()
    if len(data) > MAX_HEADER:
        raise ValueError("header too large")
    return b"".join((magic, _HEADER_LEN.pack(len(data)), data, payload))


def unframe(magic: bytes, blob: bytes, what: str) -> tuple[dict[str, Any], memoryview]:
    """(header, payload) of a framed value, else CorruptEntry. The payload is not checked yet."""
    if len(blob) < len(magic) + _HEADER_LEN.size or not blob.startswith(magic):
        raise CorruptEntry(f"not a {what}")
    (size,) = _HEADER_LEN.unpack_from(blob, len(magic))
    start = len(magic) + _HEADER_LEN.size
    if size > MAX_HEADER or start + size > len(blob):
        raise CorruptEntry("truncated header")
    try:
        header = json.loads(blob[start : start + size])
    except ValueError:
        raise CorruptEntry("unreadable header") from None
    if not isinstance(header, dict) or not isinstance(header.get("xxh3"), str):
        raise CorruptEntry("unreadable header")
    return header, memoryview(blob)[start + size :]


def check_payload(header: dict[str, Any], payload: memoryview, size: int) -> None:
    """CorruptEntry unless the payload is `size` bytes with the header's checksum."""
    if len(payload) != size:
        raise CorruptEntry("truncated payload")
    if xxhash.xxh3_64_hexdigest(payload) != header["xxh3"]:
        raise CorruptEntry("payload checksum mismatch")
