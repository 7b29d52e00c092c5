"""``controls.ledger:``: the cost ledger, every request's usage and cost kept
(docs/controls.md#cost-ledger)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from router.config._base import _Model


class SqliteLedgerConfig(_Model):
    #: The database file ("" = <state dir>/ledger.sqlite3: $XDG_STATE_HOME/hybrid-router,
    #: else ~/.local/state/hybrid-router). Created at the first record.
    path: str = ""


class RedisLedgerConfig(_Model):
    #: redis://host:6379/0 (rediss:// for TLS), or env:VAR naming the variable holding it.
    url: str = ""
    key_prefix: str = "hybrid-router:ledger:"
    #: Seconds to connect / for one command.
    timeout_s: float = Field(2.0, gt=0)


class DynamoDbLedgerConfig(_Model):
    #: The table (partition key ``pk``, sort key ``sk``, both strings; TTL attribute
    #: ``expires``): the sessions table's layout (docs/sessions.md creates one).
    table: str = ""
    #: AWS region ("" = the standard chain: AWS_REGION, the profile...).
    region: str = ""
    #: Override the service endpoint (VPC endpoint, or a local test server).
    endpoint_url: str = ""


class LedgerConfig(_Model):
    #: Write every request's usage and cost.
    enabled: bool = False
    #: sqlite (one router), redis (a fleet), dynamodb (AWS).
    store: Literal["sqlite", "redis", "dynamodb"] = "sqlite"
    sqlite: SqliteLedgerConfig = SqliteLedgerConfig()
    redis: RedisLedgerConfig = RedisLedgerConfig()
    dynamodb: DynamoDbLedgerConfig = DynamoDbLedgerConfig()
    #: Records held in memory while the store is slow or down; when this many wait, new
    #: requests are refused (UNAVAILABLE naming the store) rather than records dropped.
    buffer_records: int = Field(10_000, ge=1, le=10_000_000)
    #: Most records one write to the store carries.
    batch_records: int = Field(500, ge=1, le=10_000)
    #: Days a record is kept (0: for ever). Redis and DynamoDB expire whole days; SQLite
    #: deletes older records once an hour.
    retention_days: int = Field(0, ge=0, le=36_500)
    #: Seconds the router waits at shutdown for the buffer to be written.
    close_timeout_s: float = Field(10.0, gt=0)

    @model_validator(mode="after")
    def _store(self) -> LedgerConfig:
        if self.store == "redis" and not self.redis.url:
            raise ValueError("store 'redis' needs redis.url (redis://host:6379/0)")
        if self.store == "dynamodb" and not self.dynamodb.table:
            raise ValueError("store 'dynamodb' needs dynamodb.table")
        return self
