"""``sessions:``: conversations the router keeps for stateless callers (docs/sessions.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from router.config._base import _Model

Strategy = Literal["sliding", "summarize", "strict"]


class SqliteSessionsConfig(_Model):
    #: The database file ("" = <state dir>/sessions.sqlite3: $XDG_STATE_HOME/hybrid-router,
    #: else ~/.local/state/hybrid-router). Created at the first session.
    path: str = ""


class RedisSessionsConfig(_Model):
    #: redis://host:6379/0 (rediss:// for TLS), or env:VAR naming the variable holding it.
    url: str = ""
    key_prefix: str = "hybrid-router:sessions:"
    #: Seconds to connect / for one command.
    timeout_s: float = Field(2.0, gt=0)


class DynamoDbSessionsConfig(_Model):
    #: The table (partition key ``pk``, sort key ``sk``, both strings; TTL attribute
    #: ``expires``): `docs/sessions.md` has the create-table command.
    table: str = ""
    #: AWS region ("" = the standard chain: AWS_REGION, the profile...).
    region: str = ""
    #: Override the service endpoint (VPC endpoint, or a local test server).
    endpoint_url: str = ""


class SummariesConfig(_Model):
    #: Make running summaries for the summarize strategy (off: summarize acts as sliding).
    enabled: bool = True
    #: Longest summary, in output tokens.
    max_output_tokens: int = Field(256, ge=16, le=4096)
    #: Seconds one summary may take.
    timeout_s: float = Field(60.0, gt=0)


class SessionsConfig(_Model):
    #: Where sessions live: sqlite (one router), redis (a fleet), dynamodb (AWS).
    store: Literal["sqlite", "redis", "dynamodb"] = "sqlite"
    sqlite: SqliteSessionsConfig = SqliteSessionsConfig()
    redis: RedisSessionsConfig = RedisSessionsConfig()
    dynamodb: DynamoDbSessionsConfig = DynamoDbSessionsConfig()
    #: Seconds a session lives after its last turn (each turn moves it on).
    ttl_s: int = Field(86_400, ge=60, le=30 * 86_400)
    #: What to do when the history does not fit a backend's window (a tenant's
    #: context_strategy and a request's override it).
    strategy: Strategy = "sliding"
    #: Turns kept per session; older ones are dropped from the store.
    max_turns: int = Field(10_000, ge=2, le=1_000_000)
    summaries: SummariesConfig = SummariesConfig()

    @model_validator(mode="after")
    def _store(self) -> SessionsConfig:
        if self.store == "redis" and not self.redis.url:
            raise ValueError("store 'redis' needs redis.url (redis://host:6379/0)")
        if self.store == "dynamodb" and not self.dynamodb.table:
            raise ValueError("store 'dynamodb' needs dynamodb.table")
        return self
