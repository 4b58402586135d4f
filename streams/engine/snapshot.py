"""Local snapshots of a stage's state tables: one file per (changelog topic, partition).

A snapshot holds every entry of one partition of a ``StateTable`` together with the
changelog offset it includes: the state is the changelog partition's records below
``offset``, applied in order. A restart loads the snapshot and reads the changelog
only from ``offset`` on (``StateTable.restore``), instead of from offset 0.

File format (version 1)::

    b"IOCSNAP\\x00"            8 bytes, the magic
    blake2b-128(body)          16 bytes, checksum of what follows
    body                       msgpack array: [version, topic, partition, offset,
                                               [[key, value], ...]]

Contracts:

- ``decode_snapshot`` never returns a snapshot whose checksum, version or types are
  wrong: it raises ``SnapshotInvalid`` (with a short ``reason``) for any other bytes,
  however damaged or truncated (tested with arbitrary bytes).
- ``SnapshotStore.write`` is atomic: the bytes go to ``<file>.<pid>.tmp``, are fsynced
  and renamed over the file, then the directory is fsynced; a crash leaves the old
  snapshot or the new one, never a mix. Disk use is bounded by one file per table
  partition, each the size of that partition's state (a ``.tmp`` left by a process
  killed while writing is deleted at the file's next write).
- ``SnapshotStore.load`` returns ``(snapshot, "")`` or ``(None, reason)``; it raises
  nothing for a missing, unreadable or invalid file (the caller reads the whole
  changelog instead).
- ``SnapshotWriter`` writes in a thread of its own, so a stage does not wait for the
  encoding and the disk: at most one pending snapshot per file, latest wins (the older
  one is counted in ``superseded``, never written after the newer).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
import time
from pathlib import Path

import msgspec

from ioc.errors import IOCError

__all__ = ["MAGIC", "VERSION", "Snapshot", "SnapshotInvalid", "SnapshotStore", "SnapshotWriter",
           "decode_snapshot", "encode_snapshot"]

log = logging.getLogger(__name__)

MAGIC = b"IOCSNAP\x00"
VERSION = 1
_DIGEST = 16
_HEAD = len(MAGIC) + _DIGEST


class SnapshotInvalid(IOCError):
    """A snapshot file that cannot be used; ``reason`` is a short code (``magic``,
    ``checksum``, ``undecodable``, ``version``, ``offset``)."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


class Snapshot(msgspec.Struct, array_like=True, frozen=True):
    """The entries of one table partition and the changelog offset they include
    (every changelog record of ``topic[partition]`` below ``offset`` is applied)."""

    version: int
    topic: str
    partition: int
    offset: int
    entries: list[tuple[bytes, bytes]]


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Snapshot)


def _digest(body: bytes | memoryview) -> bytes:
    return hashlib.blake2b(body, digest_size=_DIGEST).digest()


def encode_snapshot(snap: Snapshot) -> bytes:
    """The file bytes of ``snap`` (magic, checksum, msgpack body)."""
    body = _encoder.encode(snap)
    return MAGIC + _digest(body) + body


def decode_snapshot(raw: bytes, *, where: str = "snapshot") -> Snapshot:
    """The snapshot in ``raw`` (the bytes of a file written by ``encode_snapshot``).

    Raises:
        SnapshotInvalid: wrong magic, checksum mismatch (damaged or truncated), a body
            that does not decode to the version-1 layout, or a negative offset or
            partition. ``where`` (the file name) goes into the message.
    """
    if len(raw) < _HEAD or raw[:len(MAGIC)] != MAGIC:
        raise SnapshotInvalid("magic", f"{where}: expected the magic {MAGIC!r} and a "
                                       f"{_DIGEST}-byte checksum, got {bytes(raw[:_HEAD])!r} "
                                       f"({len(raw)} bytes in all)")
    body = memoryview(raw)[_HEAD:]
    if _digest(body) != raw[len(MAGIC):_HEAD]:
        raise SnapshotInvalid("checksum", f"{where}: checksum mismatch over {len(body)} "
                                          f"bytes (damaged or truncated)")
    try:
        snap = _decoder.decode(body)
    except (msgspec.MsgspecError, ValueError, OverflowError, RecursionError) as exc:
        # ValueError: msgspec raises UnicodeDecodeError for a str that is not UTF-8
        raise SnapshotInvalid("undecodable", f"{where}: body does not decode as a "
                                             f"version-{VERSION} snapshot: {exc}") from exc
    if snap.version != VERSION:
        raise SnapshotInvalid("version", f"{where}: expected version {VERSION}, "
                                         f"got {snap.version}")
    if snap.offset < 0 or snap.partition < 0:
        raise SnapshotInvalid("offset", f"{where}: offset {snap.offset} and partition "
                                        f"{snap.partition} must be >= 0")
    if snap.offset == 0 and snap.entries:
        raise SnapshotInvalid("offset", f"{where}: {len(snap.entries)} entries at offset 0 "
                                        f"(no changelog record could hold them)")
    return snap


def _remove_stale(final: Path) -> None:
    """Delete the ``.tmp`` files of ``final`` left by processes that no longer run."""
    for tmp in final.parent.glob(f"{final.name}.*.tmp"):
        try:
            pid = int(tmp.name[len(final.name) + 1:-len(".tmp")])
            os.kill(pid, 0)
        except ValueError:
            continue  # not one of ours
        except ProcessLookupError:
            with contextlib.suppress(OSError):
                tmp.unlink()
        except OSError:
            continue  # alive (PermissionError: another user's process)


class SnapshotStore:
    """Snapshot files under ``directory``: ``<directory>/<changelog topic>/<partition>.snap``."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def path(self, topic: str, partition: int) -> Path:
        return self.directory / topic / f"{partition}.snap"

    def write(self, snap: Snapshot) -> int:
        """Write ``snap`` atomically (tmp, fsync, rename, fsync of the directory);
        returns the bytes written.

        Raises:
            OSError: the directory cannot be created or written.
        """
        final = self.path(snap.topic, snap.partition)
        final.parent.mkdir(parents=True, exist_ok=True)
        # a name of this process's own: workers sharing a directory never write into
        # each other's file (a rename is atomic; the last one wins, both are whole)
        tmp = final.with_name(f"{final.name}.{os.getpid()}.tmp")
        data = encode_snapshot(snap)
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
        fd = os.open(final.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        _remove_stale(final)
        return len(data)

    def load(self, topic: str, partition: int) -> tuple[Snapshot | None, str]:
        """The snapshot of ``topic[partition]``, or None and why not: ``missing``, or a
        line naming the file and what is wrong with it (never raises)."""
        p = self.path(topic, partition)
        try:
            raw = p.read_bytes()
        except FileNotFoundError:
            return None, "missing"
        except OSError as exc:
            return None, f"{p}: unreadable ({exc})"
        try:
            snap = decode_snapshot(raw, where=str(p))
        except SnapshotInvalid as exc:
            return None, str(exc)
        if snap.topic != topic or snap.partition != partition:
            return None, (f"{p}: expected {topic}[{partition}], the file holds "
                          f"{snap.topic}[{snap.partition}]")
        return snap, ""

    def remove(self, topic: str, partition: int) -> None:
        """Delete the snapshot of ``topic[partition]`` if there is one."""
        with contextlib.suppress(FileNotFoundError):
            self.path(topic, partition).unlink()


class SnapshotWriter:
    """Writes snapshots to a ``SnapshotStore`` in a daemon thread of its own.

    ``submit`` never blocks on the disk: the pending snapshots are a dict with one slot
    per (topic, partition) (bounded by the tables' partitions), a newer snapshot replacing
    an older one not yet written (counted in ``superseded``). A write that fails is
    counted in ``errors`` and logged; the older file stays.
    """

    def __init__(self, store: SnapshotStore) -> None:
        self.store = store
        self._pending: dict[tuple[str, int], Snapshot] = {}
        self._busy: tuple[str, int] | None = None
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closing = False
        self.written = 0
        self.superseded = 0
        self.errors = 0
        self.bytes = 0
        self.seconds = 0.0  # spent encoding and writing, in the writer's thread

    def submit(self, snap: Snapshot) -> None:
        """Queue ``snap`` for writing (latest wins per file)."""
        with self._cv:
            key = (snap.topic, snap.partition)
            if key in self._pending:
                self.superseded += 1
            self._pending[key] = snap
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name="snapshot-writer")
                self._thread.start()
            self._cv.notify_all()

    def wait(self, timeout_s: float = 30.0) -> bool:
        """Wait until every submitted snapshot is written (or failed); False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._cv:
            while self._pending or self._busy is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cv.wait(left)
        return True

    def close(self, timeout_s: float = 30.0) -> bool:
        """Write what is pending, then end the thread; False if that took too long."""
        done = self.wait(timeout_s)
        with self._cv:
            self._closing = True
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join(max(0.1, timeout_s if done else 0.1))
        with self._cv:  # reusable: the next submit starts a new thread
            self._thread, self._closing = None, False
        return done

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._pending and not self._closing:
                    self._cv.wait()
                if not self._pending:
                    return
                key = next(iter(self._pending))
                snap = self._pending.pop(key)
                self._busy = key
            t0 = time.perf_counter()
            try:
                size = self.store.write(snap)
            except OSError as exc:
                with self._cv:
                    self.errors += 1
                log.error("writing the snapshot of %s[%d] under %s failed (%d so far): %s",
                          snap.topic, snap.partition, self.store.directory, self.errors, exc)
            else:
                with self._cv:
                    self.written += 1
                    self.bytes += size
            finally:
                with self._cv:
                    self.seconds += time.perf_counter() - t0
                    self._busy = None
                    self._cv.notify_all()
