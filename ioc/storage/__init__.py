"""PostgreSQL/TimescaleDB storage: connections, feature detection and migrations."""

from ._db import StorageFeatures, connect, detect_features, drop_schema
from ._migrate import Migration, MigrationContext, applied_versions, migrate

__all__ = [
    "Migration",
    "MigrationContext",
    "StorageFeatures",
    "applied_versions",
    "connect",
    "detect_features",
    "drop_schema",
    "migrate",
]
