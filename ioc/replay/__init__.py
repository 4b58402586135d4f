"""Record and replay: recordings on MCAP, replay at a pace into a namespace, runs, compare.

- ``format``: one Kafka record <-> one MCAP message (JSON; frames as
  ``foxglove.CompressedImage``), event times, CLI times.
- ``recording``: ``RecordingWriter`` and ``open_recording`` (index or scan, damage with
  its byte offset, salvage of what precedes it).
- ``timing``: ``ReplayPacer``, the pure timing of a replay.
- ``kafka_io``: ``consume_range`` (offsets for times) and ``KafkaTarget``.
- ``db_source``: stored events as a replay source.
- ``engine``: target choice and checks, ``run_replay``.
- ``runs`` / ``compare``: the runs registry and the comparison of two namespaces.
- ``cli`` / ``runs_cli``: ``ioc record``, ``ioc replay``, ``ioc runs``.

Details and decisions: docs/replay.md.
"""

from .exceptions import RecordingDamaged, RecordingError, RecordingMismatch
from .format import KafkaRecord, decode_message, encode_message
from .recording import Recording, RecordingInfo, RecordingWriter, open_recording
from .timing import ReplayPacer, parse_speed

__all__ = [
    "KafkaRecord",
    "Recording",
    "RecordingDamaged",
    "RecordingError",
    "RecordingInfo",
    "RecordingMismatch",
    "RecordingWriter",
    "ReplayPacer",
    "decode_message",
    "encode_message",
    "open_recording",
    "parse_speed",
]
