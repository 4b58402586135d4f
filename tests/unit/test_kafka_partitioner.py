"""ioc.kafka.partition_for: the Java client's default partitioner, and the libraries'."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ioc.kafka import partition_for
from ioc.kafka.partitioner import murmur2

# org.apache.kafka.common.utils.UtilsTest.testMurmur2 (Java's signed int results).
JAVA_UTILS_TEST = [
    (b"21", -973932308),
    (b"foobar", -790332482),
    (b"a-little-bit-long-string", -985981536),
    (b"a-little-bit-longer-string", -1486304829),
    (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
    (b"abc", 479470107),
]

# Printed by kafka-clients 4.1.1 (java 17): Utils.murmur2(key) and
# BuiltInPartitioner.partitionForKey(key, n) for n = 4, 12 and 1000.
JAVA_PARTITIONS = [
    (b"", 275646681, 1, 9, 681),
    (b"a", -1563381124, 0, 4, 524),
    (b"ab", 316155434, 2, 2, 434),
    (b"abc", 479470107, 3, 3, 107),
    (b"abcd", -1323649548, 0, 8, 100),
    (b"21", -973932308, 0, 0, 340),
    (b"foobar", -790332482, 2, 6, 166),
    (b"cam-01", 840704231, 3, 11, 231),
    (b"sensor:air:042", -1482324105, 3, 11, 543),
    (b"city.traffic/counter-17", -1966894074, 2, 2, 574),
    ("événement-ü".encode(), 913014121, 1, 1, 121),
    (b"a-little-bit-longer-string", -1486304829, 3, 11, 819),
    (b"\x00\xff\x80\x7f\xfe", 1617215701, 1, 1, 701),
]


@pytest.mark.parametrize(("key", "java"), JAVA_UTILS_TEST)
def test_murmur2_matches_the_java_client(key: bytes, java: int) -> None:
    assert murmur2(key) == java & 0xFFFFFFFF


@pytest.mark.parametrize(("key", "java", "p4", "p12", "p1000"), JAVA_PARTITIONS)
def test_partition_for_matches_the_java_client(key: bytes, java: int, p4: int, p12: int,
                                               p1000: int) -> None:
    assert murmur2(key) == java & 0xFFFFFFFF
    assert [partition_for(key, n) for n in (4, 12, 1000)] == [p4, p12, p1000]


def test_partition_for_refuses_no_partitions() -> None:
    with pytest.raises(ValueError, match="partitions: expected a positive count, got 0"):
        partition_for(b"k", 0)


@settings(max_examples=400, deadline=None)
@given(key=st.binary(max_size=80), partitions=st.integers(1, 4096))
def test_partition_for_agrees_with_the_libraries_it_replaced(key: bytes, partitions: int) -> None:
    # streams.engine used aiokafka's murmur2; ioc.replay.db_source and
    # streams.camera_health_agent used kafka-python's.
    from aiokafka.partitioner import murmur2 as aiokafka_murmur2
    from kafka.partitioner.default import murmur2 as kafka_python_murmur2

    assert murmur2(key) == aiokafka_murmur2(key) == kafka_python_murmur2(key) & 0xFFFFFFFF
    want = (aiokafka_murmur2(key) & 0x7FFFFFFF) % partitions
    assert partition_for(key, partitions) == want
    assert 0 <= want < partitions
