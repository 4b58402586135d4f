"""Recording files: check a file and read messages back (``RecordingWriter`` writes
them, in ``writer.py``; re-exported here).

Reading is our own small reader over the MCAP records because a
replay must (1) say exactly where a file is damaged and (2) still read everything before
the damage; the library's readers raise without a position and stop.

Two ways to open a file (``open_recording``):

- *indexed*: the footer and summary section are intact, so chunk positions and time
  ranges come from the MCAP index; ``--from`` skips whole chunks without reading them.
  ``verify=True`` (the default of ``ioc replay``) also reads every chunk once and checks
  its CRC, so a flipped byte is reported before anything is produced.
- *scanned*: no usable summary (truncated file, killed recorder, damaged index): the
  file is read from the start and stops at the first damaged record; the chunks before
  it stay usable.

Messages come out in log-time order (a heap over chunks, loaded lazily), ties broken by
file position, so the per-partition order the writer kept is never changed.
"""

from __future__ import annotations

import heapq
import io
import itertools
import os
import struct
import zlib
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

from mcap.data_stream import ReadDataStream
from mcap.exceptions import McapError
from mcap.opcode import Opcode
from mcap.records import (
    Channel,
    Chunk,
    ChunkIndex,
    Footer,
    Metadata,
    Schema,
    Statistics,
)

from .exceptions import RecordingDamaged, RecordingError
from .format import FORMAT_VERSION
from .writer import RecordingWriter

# What mcap's record readers raise on damaged bytes besides ValueError/struct.error: a
# length past the end (EndOfFile), a length beyond an index (OverflowError).
_DAMAGE = (ValueError, struct.error, McapError, OverflowError, IndexError)

__all__ = [
    "FORMAT_VERSION",
    "ChunkRef",
    "RawMessage",
    "Recording",
    "RecordingInfo",
    "RecordingWriter",
    "open_recording",
]

_MAGIC = bytes([137, 77, 67, 65, 80, 48, 13, 10])
_KNOWN_OPCODES = {int(o) for o in Opcode}
_REC_HDR = struct.Struct("<BQ")
_MSG_HDR = struct.Struct("<HIQQ")  # channel id, sequence, log time, publish time
_PREFETCH = 2


@dataclass(frozen=True, slots=True)
class ChunkRef:
    """Where a chunk is and what it holds."""

    offset: int
    length: int  # whole record, opcode and length prefix included
    start_ns: int
    end_ns: int
    channels: frozenset[int] | None  # None: unknown (scanned files)


class RawMessage(NamedTuple):
    """One message as stored: decode ``data`` with ``ioc.replay.format.decode_message``."""

    log_time_ns: int
    publish_time_ns: int
    topic: str
    schema: str
    data: bytes
    chunk_offset: int


@dataclass
class RecordingInfo:
    """What a recording holds; ``damage`` is set when the file is damaged."""

    path: str
    size: int
    mode: str  # "indexed" or "scanned"
    metadata: dict[str, dict[str, str]] = field(default_factory=dict)
    channels: dict[int, Channel] = field(default_factory=dict)
    schemas: dict[int, Schema] = field(default_factory=dict)
    chunks: list[ChunkRef] = field(default_factory=list)
    message_count: int = 0
    per_channel: dict[int, int] = field(default_factory=dict)
    start_ns: int = 0
    end_ns: int = 0
    verified: bool = False
    damage: RecordingDamaged | None = None
    data_end: int = 0  # offset of the DataEnd record (indexed files)

    @property
    def namespace(self) -> str | None:
        return self.metadata.get("ioc.recording", {}).get("namespace")

    @property
    def partitions(self) -> dict[str, int]:
        """Partition count per recorded topic (from channel metadata)."""
        return {c.topic: int(c.metadata.get("kafka.partitions", "0")) for c in self.channels.values()}

    def per_topic(self) -> dict[str, int]:
        return {c.topic: self.per_channel.get(cid, 0) for cid, c in self.channels.items()}

    def schema_of(self, channel_id: int) -> str:
        ch = self.channels[channel_id]
        return self.schemas[ch.schema_id].name if ch.schema_id in self.schemas else ""


def _body_stream(body: bytes) -> ReadDataStream:
    return ReadDataStream(io.BytesIO(body))


def _chunk_payload(chunk: Chunk) -> bytes:
    """Decompressed chunk records; ValueError names what is wrong."""
    if chunk.compression == "zstd":
        import zstandard

        try:
            data = zstandard.ZstdDecompressor().decompress(chunk.data, max_output_size=chunk.uncompressed_size)
        except zstandard.ZstdError as exc:
            raise ValueError(f"zstd data does not decompress: {exc}") from None
    elif chunk.compression == "lz4":
        import lz4.frame

        try:
            data = lz4.frame.decompress(chunk.data)
        except RuntimeError as exc:
            raise ValueError(f"lz4 data does not decompress: {exc}") from None
    elif chunk.compression == "":
        data = chunk.data
    else:
        raise ValueError(f"expected compression zstd, lz4 or none, got {chunk.compression!r}")
    if len(data) != chunk.uncompressed_size:
        raise ValueError(f"chunk holds {len(data)} bytes, its header says {chunk.uncompressed_size}")
    if chunk.uncompressed_crc and zlib.crc32(data) != chunk.uncompressed_crc:
        raise ValueError(f"chunk CRC mismatch: expected {chunk.uncompressed_crc:#010x}, "
                         f"computed {zlib.crc32(data):#010x}")
    return data


def _iter_chunk_records(payload: bytes) -> Iterator[tuple[int, memoryview]]:
    mv = memoryview(payload)
    pos, end = 0, len(payload)
    while pos < end:
        if end - pos < 9:
            raise ValueError(f"chunk record header cut at byte {pos} of {end}")
        op, length = _REC_HDR.unpack_from(mv, pos)
        pos += 9
        if length > end - pos:
            raise ValueError(f"chunk record of {length} bytes runs past the chunk end")
        yield op, mv[pos:pos + length]
        pos += length


class _Scanner:
    """Reads top-level records from the start; stops at the first damaged one."""

    def __init__(self, path: str, fh: BinaryIO, size: int) -> None:
        self.path, self.fh, self.size = path, fh, size
        self.info = RecordingInfo(path=path, size=size, mode="scanned", verified=True)
        self.stats: Statistics | None = None
        self.index_chunks: dict[int, ChunkIndex] = {}

    def damaged(self, offset: int, index: int, reason: str) -> RecordingDamaged:
        return RecordingDamaged(self.path, offset, index, self.info.message_count, reason)

    def run(self) -> RecordingInfo:
        info = self.info
        fh = self.fh
        fh.seek(0)
        if fh.read(8) != _MAGIC:
            info.damage = self.damaged(0, 0, "expected the MCAP magic bytes at the start")
            return info
        pos, index = 8, 0
        crc = zlib.crc32(_MAGIC)
        in_data = True
        while True:
            head = fh.read(9)
            if len(head) == 0:
                info.damage = self.damaged(pos, index, "file ends without a footer "
                                           "(truncated, or the recorder was killed)")
                return info
            if len(head) < 9:
                info.damage = self.damaged(pos, index, f"file ends inside a record header "
                                           f"({len(head)} of 9 bytes; truncated)")
                return info
            op, length = _REC_HDR.unpack(head)
            if op not in _KNOWN_OPCODES:
                info.damage = self.damaged(pos, index, f"unknown record opcode {op:#04x}")
                return info
            if length > self.size - pos - 9:
                info.damage = self.damaged(pos, index, f"{Opcode(op).name} record of {length} bytes "
                                           f"runs past the end of the file ({self.size} bytes; truncated?)")
                return info
            body = fh.read(length)
            try:
                done = self._record(op, body, pos, index, crc if in_data else None)
            except (*_DAMAGE, UnicodeDecodeError, RecordingError) as exc:
                info.damage = self.damaged(pos, index, f"{Opcode(op).name} record: "
                                           f"{type(exc).__name__}: {exc}")
                return info
            if op == Opcode.DATA_END:
                in_data = False
            elif in_data:
                crc = zlib.crc32(body, zlib.crc32(head, crc))
            pos += 9 + length
            index += 1
            if done:
                if fh.read(8) != _MAGIC:
                    info.damage = self.damaged(pos, index, "expected the MCAP magic bytes after the footer")
                return info

    def _record(self, op: int, body: bytes, pos: int, index: int, crc: int | None) -> bool:
        info = self.info
        s = _body_stream(body)
        if op == Opcode.CHUNK:
            chunk = Chunk.read(s)
            payload = _chunk_payload(chunk)
            n = 0
            per = info.per_channel
            for cop, rec in _iter_chunk_records(payload):
                if cop == Opcode.MESSAGE:
                    cid = int.from_bytes(rec[:2], "little")
                    per[cid] = per.get(cid, 0) + 1
                    n += 1
                elif cop == Opcode.SCHEMA:
                    sc = Schema.read(_body_stream(bytes(rec)))
                    info.schemas[sc.id] = sc
                elif cop == Opcode.CHANNEL:
                    ch = Channel.read(_body_stream(bytes(rec)))
                    info.channels[ch.id] = ch
            if n:
                if not info.chunks:
                    info.start_ns = chunk.message_start_time
                info.start_ns = min(info.start_ns, chunk.message_start_time)
                info.end_ns = max(info.end_ns, chunk.message_end_time)
                info.chunks.append(ChunkRef(pos, 9 + len(body), chunk.message_start_time,
                                            chunk.message_end_time, None))
            info.message_count += n
        elif op == Opcode.SCHEMA:
            sc = Schema.read(s)
            info.schemas[sc.id] = sc
        elif op == Opcode.CHANNEL:
            ch = Channel.read(s)
            info.channels[ch.id] = ch
        elif op == Opcode.METADATA:
            md = Metadata.read(s)
            info.metadata[md.name] = dict(md.metadata)
        elif op == Opcode.MESSAGE:
            raise ValueError("a message outside a chunk (this writer always chunks)")
        elif op == Opcode.DATA_END:
            expected = struct.unpack_from("<I", body)[0]
            if expected and crc is not None and expected != crc:
                raise ValueError(f"data section CRC mismatch: expected {expected:#010x}, computed "
                                 f"{crc:#010x} (a byte outside the chunk payloads changed)")
        elif op == Opcode.STATISTICS:
            self.stats = Statistics.read(s)
            if self.stats.message_count != info.message_count:
                raise ValueError(f"statistics say {self.stats.message_count} messages, "
                                 f"the chunks hold {info.message_count}")
        elif op == Opcode.FOOTER:
            return True
        return False


def _read_index(path: str, fh: BinaryIO, size: int) -> RecordingInfo | None:
    """The summary section's view of the file, or None when it is absent or unreadable."""
    try:
        if size < 8 + 9 + 20 + 8:
            return None
        fh.seek(size - 8)
        if fh.read(8) != _MAGIC:
            return None
        fh.seek(size - 8 - 29)
        op, length = _REC_HDR.unpack(fh.read(9))
        if op != Opcode.FOOTER or length != 20:
            return None
        footer = Footer.read(_body_stream(fh.read(20)))
        if not footer.summary_start or footer.summary_start >= size - 37:
            return None
        fh.seek(footer.summary_start)
        summary = fh.read(size - 37 - footer.summary_start)
        if footer.summary_crc:
            fh.seek(size - 8 - 29)
            tail = fh.read(9 + 8 + 8)  # footer header + summary_start + summary_offset_start
            if zlib.crc32(tail, zlib.crc32(summary)) != footer.summary_crc:
                return None
        info = RecordingInfo(path=path, size=size, mode="indexed")
        info.data_end = footer.summary_start - 13  # the DataEnd record precedes the summary
        md_offsets: list[int] = []
        stats = None
        pos = 0
        while pos < len(summary):
            op, length = _REC_HDR.unpack_from(summary, pos)
            body = summary[pos + 9:pos + 9 + length]
            s = _body_stream(body)
            if op == Opcode.SCHEMA:
                sc = Schema.read(s)
                info.schemas[sc.id] = sc
            elif op == Opcode.CHANNEL:
                ch = Channel.read(s)
                info.channels[ch.id] = ch
            elif op == Opcode.CHUNK_INDEX:
                ci = ChunkIndex.read(s)
                info.chunks.append(ChunkRef(ci.chunk_start_offset, ci.chunk_length,
                                            ci.message_start_time, ci.message_end_time,
                                            frozenset(ci.message_index_offsets)))
            elif op == Opcode.METADATA_INDEX:
                md_offsets.append(struct.unpack_from("<Q", body)[0])
            elif op == Opcode.STATISTICS:
                stats = Statistics.read(s)
            pos += 9 + length
        if stats is None:
            return None
        info.message_count = stats.message_count
        info.per_channel = dict(stats.channel_message_counts)
        info.start_ns, info.end_ns = stats.message_start_time, stats.message_end_time
        for off in md_offsets:
            fh.seek(off)
            op, length = _REC_HDR.unpack(fh.read(9))
            if op != Opcode.METADATA:
                return None
            md = Metadata.read(_body_stream(fh.read(length)))
            info.metadata[md.name] = dict(md.metadata)
        return info
    except Exception:
        # Any failure to parse the tail means "no usable index": the file is scanned instead.
        return None


class Recording:
    """An opened recording. Use ``messages()``; ``info`` says what it holds."""

    def __init__(self, path: str, fh: BinaryIO, info: RecordingInfo) -> None:
        self.path = path
        self._fh = fh
        self.info = info

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> Recording:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _payload(self, ref: ChunkRef) -> bytes:
        """Read, decompress and CRC-check one chunk (C calls that release the GIL)."""
        self._fh.seek(ref.offset)
        raw = self._fh.read(ref.length)
        if len(raw) != ref.length:
            raise RecordingDamaged(self.path, ref.offset, -1, 0,
                                   f"chunk needs {ref.length} bytes, file ends after {len(raw)}")
        try:
            op, length = _REC_HDR.unpack_from(raw)
            if op != Opcode.CHUNK:
                raise ValueError(f"expected a CHUNK record (opcode 0x06), found opcode {op:#04x}")
            return _chunk_payload(Chunk.read(_body_stream(raw[9:9 + length])))
        except _DAMAGE as exc:
            raise RecordingDamaged(self.path, ref.offset, -1, 0,
                                   f"chunk: {type(exc).__name__}: {exc}") from None

    def _parse(self, ref: ChunkRef, payload: bytes) -> list[tuple[int, int, int, bytes]]:
        """The chunk's messages as ``(log time, publish time, channel id, data)``."""
        try:
            out = []
            unpack = _MSG_HDR.unpack_from
            for cop, rec in _iter_chunk_records(payload):
                if cop == 5:  # Opcode.MESSAGE
                    cid, _seq, log_t, pub_t = unpack(rec)
                    out.append((log_t, pub_t, cid, bytes(rec[22:])))
            return out
        except _DAMAGE as exc:
            raise RecordingDamaged(self.path, ref.offset, -1, 0,
                                   f"chunk: {type(exc).__name__}: {exc}") from None

    def _load(self, ref: ChunkRef) -> list[tuple[int, int, int, bytes]]:
        return self._parse(ref, self._payload(ref))

    def messages(self, *, start_ns: int | None = None, end_ns: int | None = None,
                 topics: Iterable[str] | None = None) -> Iterator[RawMessage]:
        """Messages with ``start_ns <= log_time < end_ns`` of ``topics``, in log-time order.

        Chunks outside the range are never read (the index's time ranges). On a damaged
        file only the chunks before the damage are read. When chunks do not overlap in
        time (the usual case) each is sorted on its own; otherwise a heap merges them.

        Raises:
            RecordingDamaged: a chunk turned out damaged while reading (unverified file).
        """
        info = self.info
        wanted = None if topics is None else set(topics)
        cids = {cid for cid, c in info.channels.items() if wanted is None or c.topic in wanted}
        topic_of = {cid: info.channels[cid].topic for cid in cids}
        schema_of = {cid: info.schema_of(cid) for cid in cids}
        refs = []
        for ref in info.chunks:
            if start_ns is not None and ref.end_ns < start_ns:
                continue
            if end_ns is not None and ref.start_ns >= end_ns:
                continue
            if ref.channels is not None and not (ref.channels & cids):
                continue
            refs.append(ref)
        refs.sort(key=lambda r: (r.start_ns, r.offset))
        lo = -1 if start_ns is None else start_ns
        hi = (1 << 64) if end_ns is None else end_ns

        def pick(msgs: list[tuple[int, int, int, bytes]]) -> list[tuple[int, int, int, bytes]]:
            return [m for m in msgs if m[2] in cids and lo <= m[0] < hi]

        def load(ref: ChunkRef) -> list[tuple[int, int, int, bytes]]:
            return pick(self._load(ref))

        disjoint = all(a.end_ns <= b.start_ns for a, b in itertools.pairwise(refs))
        if disjoint:
            # One reader thread reads, decompresses and CRC-checks the next chunks while
            # this one hands messages out. It runs only C calls that release the GIL
            # (Python work there would fight the event loop for the GIL); the parsing
            # stays here. At most ``_PREFETCH`` chunks are loaded ahead (bounded memory).
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="mcap-read") as pool:
                ahead: deque[tuple[ChunkRef, Future[bytes]]] = deque()
                it = iter(refs)
                for ref in itertools.islice(it, _PREFETCH):
                    ahead.append((ref, pool.submit(self._payload, ref)))
                while ahead:
                    ref, fut = ahead.popleft()
                    nxt = next(it, None)
                    if nxt is not None:
                        ahead.append((nxt, pool.submit(self._payload, nxt)))
                    msgs = pick(self._parse(ref, fut.result()))
                    msgs.sort(key=_log_time)  # stable: keeps file order among equal times
                    for log_t, pub_t, cid, data in msgs:
                        yield RawMessage(log_t, pub_t, topic_of[cid], schema_of[cid], data, ref.offset)
            return
        heap: list[tuple[int, int, int, Any]] = [(r.start_ns, r.offset, -1, r) for r in refs]
        heapq.heapify(heap)
        while heap:
            t, off, idx, item = heapq.heappop(heap)
            if idx < 0:
                for i, (log_t, pub_t, cid, data) in enumerate(load(item)):
                    heapq.heappush(heap, (log_t, off, i, (pub_t, cid, data)))
                continue
            pub_t, cid, data = item
            yield RawMessage(t, pub_t, topic_of[cid], schema_of[cid], data, off)


def _log_time(m: tuple[int, int, int, bytes]) -> int:
    return m[0]


def _data_crc_ok(fh: BinaryIO, data_end: int) -> bool:
    """True when the DataEnd record at ``data_end`` carries a CRC that matches the bytes
    before it (the whole data section, magic included)."""
    fh.seek(data_end)
    head = fh.read(13)
    if len(head) != 13:
        return False
    op, length = _REC_HDR.unpack_from(head)
    expected = struct.unpack_from("<I", head, 9)[0]
    if op != Opcode.DATA_END or length != 4 or expected == 0:
        return False
    fh.seek(0)
    crc, left = 0, data_end
    while left:
        block = fh.read(min(left, 4 << 20))
        if not block:
            return False
        crc = zlib.crc32(block, crc)
        left -= len(block)
    return crc == expected


def open_recording(path: str | os.PathLike[str], *, verify: bool = True) -> Recording:
    """Open a recording for reading.

    With an intact index and ``verify=False`` nothing but the summary is read. Otherwise
    the whole file is scanned once: ``info.damage`` then names the first damaged record,
    and ``messages()`` covers only the chunks before it.

    Raises:
        RecordingError: the file cannot be opened at all.
    """
    p = str(path)
    try:
        fh = open(p, "rb")  # noqa: SIM115 - owned by the Recording
        size = Path(p).stat().st_size
    except OSError as exc:
        raise RecordingError(f"{p}: cannot open recording: {exc.strerror}") from exc
    indexed = _read_index(p, fh, size)
    if indexed is not None and not verify:
        return Recording(p, fh, indexed)
    if indexed is not None and indexed.data_end and _data_crc_ok(fh, indexed.data_end):
        # Every byte before the index is as written, so every chunk is: no need to
        # decompress the file twice. Only a mismatch needs the scan that finds the place.
        indexed.verified = True
        return Recording(p, fh, indexed)
    scanned = _Scanner(p, fh, size).run()
    if indexed is not None and scanned.damage is None:
        indexed.verified = True
        return Recording(p, fh, indexed)
    if scanned.damage is not None and scanned.damage.offset <= 8 and not scanned.channels:
        fh.close()
        raise scanned.damage
    return Recording(p, fh, scanned)
