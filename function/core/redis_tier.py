"""The Redis implementation of the shared feature tier (see feature_store.py).

One `redis.Redis` client (thread-safe connection pool) with short socket timeouts and no
retries: a store that is down, slow or full costs a click at most one timeout, then the
breaker keeps it off the request path until `retry_s` has passed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .feature_store import FeatureCodec, FeatureTier, ModelIdentity


def redis_client(url: str, password: str, timeout_s: float) -> Any:
    """A client for `redis://[:password@]host:port/db` (or `rediss://`, `unix://`)."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    options: dict[str, Any] = {
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
        "retry": Retry(NoBackoff(), 0),
        "retry_on_timeout": False,
        "health_check_interval": 0,
        "max_connections": 32,
    }
    if password:
        options["password"] = password
    return redis.Redis.from_url(url, **options)


def redis_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean the store is unreachable or broken: the breaker opens."""
    import redis

    return (redis.RedisError, OSError)


def redis_refusals() -> tuple[type[BaseException], ...]:
    """Errors Redis answers with (OOM under `noeviction`, read-only replica): it is reachable."""
    import redis

    return (redis.ResponseError,)


def redis_feature_tier(
    url: str,
    identity: ModelIdentity,
    codec: FeatureCodec,
    *,
    password: str,
    timeout_s: float,
    ttl_s: int,
    retry_s: float,
    queue_size: int = 4,
    idle: Callable[[float], bool] | None = None,
) -> FeatureTier:
    return FeatureTier(
        redis_client(url, password, timeout_s),
        identity,
        codec,
        ttl_s=ttl_s,
        retry_s=retry_s,
        queue_size=queue_size,
        store_errors=redis_errors(),
        refusals=redis_refusals(),
        idle=idle,
        describe="feature store (Redis)",
    )
