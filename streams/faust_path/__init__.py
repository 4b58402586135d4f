"""Experimental: aggregate+kpis+rules as one Faust agent on batched ``<ns>.events`` records.

The experiment of docs/adr/0002-event-engine.md (issue 18, item 1): a batched record
holds the events of one input batch for one ``<ns>.events`` partition
(``encode_batch``/``decode_batch``); ``EventCore`` is the Sans-I/O work on one record
(the pure domain classes of ``ioc.aggregate``, ``ioc.kpi`` and ``ioc.rules``, state
read and written through callables); ``create_faust_app`` hosts it on a Faust agent
with RocksDB tables and standby replicas. Not part of ``ioc worker``: it runs as
``python -m streams.faust_path`` (bench/bench_engine.py starts it).
"""

from ._batched import BATCH_MAGIC, batch_by_partition, decode_batch, encode_batch
from ._core import CoreOutput, EventCore

__all__ = ["BATCH_MAGIC", "CoreOutput", "EventCore", "batch_by_partition", "decode_batch",
           "encode_batch"]
