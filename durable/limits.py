"""Per-namespace limits, with Cloudflare production values as defaults.

Every limit is checked before anything is written, and a breach raises its own error from
``durable.errors`` (``KeyTooLarge``, ``ValueTooLarge``, ``BatchTooLarge``, ``MessageTooLarge``,
``StorageLimitExceeded``, ``Overloaded``, ``CpuTimeExceeded``, ``SqlError``).

Example::

    Worker(objects={"BIG": Big}, limits={"BIG": Limits(max_storage_bytes=10 * 2**30)})
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Limits(BaseModel):
    """Limits of one namespace (binding). Frozen: hosts share one instance."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_key_bytes: int = Field(2048, gt=0, description="UTF-8 bytes per KV key")
    max_value_bytes: int = Field(128 * 1024, gt=0, description="serialized bytes per KV value")
    max_batch_keys: int = Field(128, gt=0, description="keys per get/put/delete batch")
    max_sql_params: int = Field(100, gt=0, description="bound parameters per statement")
    max_sql_columns: int = Field(100, gt=0, description="columns per table")
    max_sql_statement_bytes: int = Field(100_000, gt=0, description="bytes per sql.exec text")
    max_sql_row_bytes: int = Field(2_000_000, gt=0, description="bytes per string/blob/row")
    max_storage_bytes: int = Field(128 * 2**20, gt=0, description="KV + SQL bytes per object")
    max_pending_events: int = Field(1000, gt=0, description="events queued per object")
    cpu_ms: int = Field(30_000, gt=0, description="ms one event may hold the loop unyielding")
    max_rpc_bytes: int = Field(32 * 2**20, gt=0, description="serialized RPC args or result")
    synchronous: Literal["normal", "full"] = Field(
        "normal", description="SQLite synchronous mode: normal survives kill -9, full power loss"
    )
