"""The partition a keyed record lands in: the Java client's default partitioner.

``partition_for(key, n) == toPositive(murmur2(key)) % n`` as in Kafka's
``BuiltInPartitioner.partitionForKey``; kafka-python, aiokafka and librdkafka's
``murmur2_random`` (set by ``rdkafka_conf`` for our producers) choose the same
partition, so a key lands in one partition whoever writes it. Code that must know
where a key goes without producing it (co-partitioned state, a replay from the
database, a worker that owns some cameras) asks this function, never a client
library.

Pure: no Kafka client is imported.
"""

from __future__ import annotations

import struct

__all__ = ["murmur2", "partition_for"]

_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF
_WORDS = struct.Struct("<I")


def murmur2(data: bytes) -> int:
    """MurmurHash2 of ``data`` as the Java client's ``Utils.murmur2`` computes it, as an
    unsigned 32-bit integer (Java's signed result ``& 0xFFFFFFFF``)."""
    length = len(data)
    h = _SEED ^ length
    whole = length & ~3
    for (k,) in _WORDS.iter_unpack(data[:whole]):
        k = (k * _M) & _MASK
        k ^= k >> 24
        h = ((h * _M) & _MASK) ^ ((k * _M) & _MASK)
    rest = length & 3
    if rest == 3:
        h ^= data[whole + 2] << 16
    if rest >= 2:
        h ^= data[whole + 1] << 8
    if rest >= 1:
        h = ((h ^ data[whole]) * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    return h ^ (h >> 15)


def partition_for(key: bytes, partitions: int) -> int:
    """The partition of ``key`` in a topic of ``partitions`` partitions.

    Raises:
        ValueError: ``partitions`` is not positive.
    """
    if partitions < 1:
        raise ValueError(f"partitions: expected a positive count, got {partitions}")
    return (murmur2(key) & 0x7FFFFFFF) % partitions
