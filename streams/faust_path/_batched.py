"""The batched form of ``<ns>.events``: one record carries many events of one partition.

Layout (all integers big-endian)::

    b"IOCB" version:u8 count:u32  then per event:
        origin_len:u16 origin (the ``ioc.raw`` header value, b"" for none)
        event_len:u32  event (canonical JSON, ``ioc.events.encode_event``)

Events keep their order inside a record, and every event of a record belongs to the
record's partition (``key_partition(entity)``), so per-entity order holds as with one
record per event. Pure: no Kafka.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence

from ioc.errors import InvalidRecord

__all__ = ["BATCH_MAGIC", "batch_by_partition", "decode_batch", "encode_batch"]

BATCH_MAGIC = b"IOCB\x01"
_HEAD = struct.Struct(">I")
_ORIGIN = struct.Struct(">H")
_EVENT = struct.Struct(">I")


def encode_batch(events: Sequence[tuple[bytes | None, bytes]]) -> bytes:
    """One batched record of ``(origin, event bytes)`` pairs, in order."""
    parts = [BATCH_MAGIC, _HEAD.pack(len(events))]
    for origin, value in events:
        o = origin or b""
        parts += (_ORIGIN.pack(len(o)), o, _EVENT.pack(len(value)), value)
    return b"".join(parts)


def decode_batch(data: bytes) -> list[tuple[bytes | None, bytes]]:
    """The ``(origin or None, event bytes)`` pairs of a batched record.

    Raises:
        InvalidRecord: ``data`` is not a batched record (wrong magic, cut short, or
            bytes left over); nothing else, whatever the bytes.
    """
    if not isinstance(data, bytes | bytearray) or not data.startswith(BATCH_MAGIC):
        raise InvalidRecord.undecodable("a batched events record (magic IOCB\\x01)",
                                        ValueError(f"starts with {bytes(data[:5])!r}"))
    try:
        pos = len(BATCH_MAGIC)
        (n,) = _HEAD.unpack_from(data, pos)
        pos += _HEAD.size
        out: list[tuple[bytes | None, bytes]] = []
        for _ in range(n):
            (lo,) = _ORIGIN.unpack_from(data, pos)
            pos += _ORIGIN.size
            origin = bytes(data[pos:pos + lo]) if lo else None
            pos += lo
            (le,) = _EVENT.unpack_from(data, pos)
            pos += _EVENT.size
            value = bytes(data[pos:pos + le])
            if len(value) != le:
                raise ValueError(f"event {len(out)} cut short: {len(value)} of {le} bytes")
            pos += le
            out.append((origin, value))
    except (struct.error, ValueError) as exc:
        raise InvalidRecord.undecodable("a batched events record", exc) from exc
    if pos != len(data):
        raise InvalidRecord.undecodable("a batched events record", ValueError(
            f"{len(data) - pos} byte(s) after the {n} event(s)"))
    return out


def batch_by_partition(events: Iterable[tuple[bytes, bytes | None, bytes]], partitions: int
                       ) -> dict[int, bytes]:
    """``(entity key, origin, event bytes)`` of one input batch -> one batched record per
    target partition (the key's murmur2 partition, as for one record per event)."""
    from streams.engine import key_partition

    by: dict[int, list[tuple[bytes | None, bytes]]] = {}
    for key, origin, value in events:
        by.setdefault(key_partition(key, partitions), []).append((origin, value))
    return {p: encode_batch(evs) for p, evs in sorted(by.items())}
