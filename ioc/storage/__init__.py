"""PostgreSQL/TimescaleDB storage: connections, feature detection and migrations."""

from ._db import (
    PRELOAD_HINT,
    StorageFeatures,
    TimescaleState,
    connect,
    detect_features,
    drop_schema,
    probe_features,
    timescale_plan,
)
from ._migrate import Migration, MigrationContext, applied_versions, migrate

__all__ = [
    "PRELOAD_HINT",
    "Migration",
    "MigrationContext",
    "StorageFeatures",
    "TimescaleState",
    "applied_versions",
    "connect",
    "detect_features",
    "drop_schema",
    "migrate",
    "probe_features",
    "timescale_plan",
]
