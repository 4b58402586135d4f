"""Settings for the infrastructure: Kafka and PostgreSQL/TimescaleDB."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator

from ._base import Section

__all__ = ["DatabaseSettings", "KafkaSettings", "default_state_dir"]


def default_state_dir() -> Path:
    """Where the local stack keeps data, logs and secrets (see deploy/local/stack.sh)."""
    if env := os.environ.get("IOC_STATE_DIR"):
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/lib/ioc-local")
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "ioc"


class KafkaSettings(Section):
    """How to reach the Kafka cluster. The local stack is the default."""

    bootstrap_servers: list[str] = Field(
        default_factory=lambda: ["127.0.0.1:19092"],
        min_length=1,
        description="host:port of one or more brokers",
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = Field(None, description="CA bundle to verify the brokers")
    ssl_certfile: Path | None = Field(None, description="client certificate (mutual TLS)")
    ssl_keyfile: Path | None = None
    client_id: str = Field("ioc", min_length=1, max_length=100)
    group_instance_id: str | None = Field(
        None, pattern=r"^[A-Za-z0-9._-]{1,200}$",
        description="this process's name in its consumer groups (static membership, "
                    "KIP-345; unset: dynamic). Set one per worker and per sink process, "
                    "never the same in two live processes (the broker fences the older "
                    "one): after a broker restart the groups then go on without a "
                    "rebalance, and a restarted process gets its partitions back at once; "
                    "a process that stops does not leave its groups: its partitions wait "
                    "its session timeout (docs/reliability.md, 'Static membership')")
    replication_factor: int = Field(1, ge=1, le=10, description="for topics created by ioc")
    request_timeout_s: float = Field(30.0, gt=0, le=600)

    @field_validator("bootstrap_servers", mode="before")
    @classmethod
    def _split_servers(cls, v: object) -> object:
        # "a:9092,b:9092" from an environment variable
        return [x.strip() for x in v.split(",") if x.strip()] if isinstance(v, str) else v

    def client_kwargs(self) -> dict[str, object]:
        """Connection options in the names kafka-python and aiokafka share."""
        kw: dict[str, object] = {
            "bootstrap_servers": list(self.bootstrap_servers),
            "security_protocol": self.security_protocol,
        }
        if self.sasl_mechanism:
            kw["sasl_mechanism"] = self.sasl_mechanism
            kw["sasl_plain_username"] = self.sasl_username
            kw["sasl_plain_password"] = (
                self.sasl_password.get_secret_value() if self.sasl_password else None
            )
        return kw

    def ssl_context(self):  # type: ignore[no-untyped-def]
        """An ``ssl.SSLContext`` for SSL/SASL_SSL, else None."""
        if "SSL" not in self.security_protocol:
            return None
        import ssl

        ctx = ssl.create_default_context(cafile=str(self.ssl_cafile) if self.ssl_cafile else None)
        if self.ssl_certfile:
            ctx.load_cert_chain(
                str(self.ssl_certfile), str(self.ssl_keyfile) if self.ssl_keyfile else None
            )
        return ctx


class DatabaseSettings(Section):
    """How to reach PostgreSQL (TimescaleDB used when the extension is present)."""

    dsn: SecretStr = Field(
        SecretStr("postgresql://ioc@127.0.0.1:55432/ioc"),
        description="libpq connection string or URI; may carry a password (never logged)",
    )
    passfile: Path | None = Field(
        default_factory=lambda: default_state_dir() / "secrets" / "pgpass",
        description="libpq password file; missing file is ignored",
    )
    timescaledb: Literal["auto", "on", "off"] = Field(
        "auto", description="auto: use the extension when it can be created"
    )
    connect_timeout_s: int = Field(10, ge=1, le=300)

    def connect_kwargs(self) -> dict[str, object]:
        kw: dict[str, object] = {"connect_timeout": self.connect_timeout_s}
        if self.passfile is not None and self.passfile.exists():
            kw["passfile"] = str(self.passfile)
        return kw
