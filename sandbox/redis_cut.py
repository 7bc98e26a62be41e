"""A TCP proxy in front of Redis that cuts its clients off right after a chosen transaction: a crash, placed exactly.

Crash-recovery tests need a process to die *between* two writes: after the MULTI/EXEC that records a decision and
before whatever it would send next. A signal cannot be aimed at a window of microseconds; this proxy can. Every byte
a client sends is forwarded until ``trigger`` (a regex over the raw RESP stream, e.g. the JSON a record write
carries) has been seen; the proxy then forwards up to and including the ``EXEC`` that ends that transaction and cuts
every connection: nothing more reaches Redis, no reply reaches the client, new connections are refused. The client
is left as a frozen or dead host would leave it, and the test SIGKILLs it.

It is test equipment: edgebot's own code connects to it unchanged, through its configured Redis URL.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
from types import TracebackType

EXEC = b"*1\r\n$4\r\nEXEC\r\n"


class RedisCut:
    def __init__(self, upstream_port: int, trigger: bytes) -> None:
        self.upstream_port = upstream_port
        self.trigger = re.compile(trigger)
        self.cut = threading.Event()
        """Set once the triggering transaction has been forwarded and every connection is cut."""
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._accepting = threading.Thread(target=self._accept, name="redis-cut-accept", daemon=True)

    def url(self, password: str | None = None) -> str:
        auth = f":{password}@" if password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def __enter__(self) -> RedisCut:
        self._accepting.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self.cut.set()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in [self._listener, *sockets]:
            with contextlib.suppress(OSError):
                sock.close()

    # -- plumbing ---------------------------------------------------------------------------------------------------
    def _accept(self) -> None:
        while not self.cut.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.cut.is_set():
                client.close()
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            with self._lock:
                self._sockets += [client, upstream]
            threading.Thread(target=self._requests, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._replies, args=(upstream, client), daemon=True).start()

    def _requests(self, client: socket.socket, upstream: socket.socket) -> None:
        """Client → Redis: forward, watching for the trigger and then for the EXEC that ends its transaction."""
        seen = bytearray()
        armed_at: int | None = None  # where in ``seen`` this connection's trigger ended
        while not self.cut.is_set():
            try:
                chunk = client.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            with self._lock:
                if self.cut.is_set():
                    return
                start = len(seen)
                seen += chunk
                if armed_at is None:
                    match = self.trigger.search(seen)
                    armed_at = match.end() if match is not None else None
                end = None
                if armed_at is not None:  # forward up to the EXEC that ends the trigger's transaction, then cut
                    found = seen.find(EXEC, max(armed_at, start - len(EXEC)))
                    end = None if found < 0 else found + len(EXEC)
                try:
                    upstream.sendall(chunk if end is None else chunk[: end - start])
                except OSError:
                    return
                if end is not None:
                    self.cut.set()
                    with contextlib.suppress(OSError):
                        self._listener.close()
                    return
            if armed_at is None and len(seen) > 4 << 20:  # keep the tail only: a trigger spans one command
                del seen[: len(seen) - (1 << 20)]

    def _replies(self, upstream: socket.socket, client: socket.socket) -> None:
        while not self.cut.is_set():
            try:
                chunk = upstream.recv(65536)
                if not chunk or self.cut.is_set():
                    return
                client.sendall(chunk)
            except OSError:
                return
