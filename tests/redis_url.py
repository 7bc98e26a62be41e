"""The URL of a test Redis connection, as a config's ``[redis] url`` (the test Redis runs with ACLs; its
administrator, the ``default`` user, is who the fixtures' connections log in as)."""

from __future__ import annotations

import redis


def url_of(conn: redis.Redis) -> str:
    kwargs = conn.connection_pool.connection_kwargs
    auth = f":{kwargs['password']}@" if kwargs.get("password") else ""
    if "path" in kwargs:
        return f"unix://{auth}{kwargs['path']}"
    return f"redis://{auth}{kwargs['host']}:{kwargs['port']}/{kwargs.get('db', 0)}"
