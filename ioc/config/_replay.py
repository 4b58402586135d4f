"""Settings of recording and replay."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ._base import Section

__all__ = ["ReplaySettings"]


class ReplaySettings(Section):
    """Recording and replay."""

    compression: Literal["zstd", "lz4", "none"] = Field(
        "zstd", description="MCAP chunk compression of new recordings (readers handle all three)")
    chunk_size_bytes: int = Field(
        1 << 20, ge=64 * 1024, le=64 << 20,
        description="MCAP chunk size: the unit of seeking, of CRC checks and of salvage")
    linger_ms: int = Field(5, ge=0, le=1000, description="replay producer: wait to fill a batch")
    batch_bytes: int = Field(
        512 * 1024, ge=16 * 1024, le=16 << 20,
        description="replay producer: batch size per partition (the producer's buffer is bounded "
                    "by batches; a full buffer slows the replay down)")
