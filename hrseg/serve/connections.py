"""Connection limits of ``hrseg serve``: a deadline to send a whole request, and a cap on open connections.

uvicorn closes an idle keep-alive connection (``timeout_keep_alive``) and answers 503 beyond
``limit_concurrency`` open connections, but it waits forever for a request that has begun: a client that
sends a request line and never finishes its head (or its body) holds a connection, and a file descriptor,
until it goes away. :class:`DeadlineProtocol` is uvicorn's HTTP protocol (httptools, which LitServe's
``uvicorn[standard]`` installs) with a read deadline: a connection must deliver a whole request, head and
body, within :attr:`ConnectionLimits.read_timeout` seconds of its first byte (or of connecting); otherwise
it gets a 408 and is closed. :class:`ConnectionStats` counts the refused and timed-out connections across
the HTTP processes (``GET /info``), and the log says so at most every :data:`LOG_EVERY` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import math
import multiprocessing
import time
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["LOG_EVERY", "ConnectionLimits", "ConnectionStats", "DeadlineProtocol", "protocol_options"]

#: seconds between two log lines about refused or timed-out connections (an attack must not flood the log)
LOG_EVERY = 10.0


class _LogSummary:
    """This HTTP process's refused and timed-out connections, logged as one line at most every LOG_EVERY s."""

    def __init__(self) -> None:
        self.counts = {"refused": 0, "timed_out": 0}
        self.logged_at = -LOG_EVERY
        self.pending: asyncio.TimerHandle | None = None

    def count(
        self, kind: str, logger: logging.Logger, loop: asyncio.AbstractEventLoop, timeout: float
    ) -> None:
        self.counts[kind] += 1
        wait = self.logged_at + LOG_EVERY - time.monotonic()
        if wait <= 0:
            self.flush(logger, timeout)
        elif self.pending is None:  # the rest of this burst goes into one line when the interval is over
            self.pending = loop.call_later(wait, self.flush, logger, timeout)

    def flush(self, logger: logging.Logger, timeout: float) -> None:
        self.pending = None
        self.logged_at = time.monotonic()
        logger.warning(
            "hrseg serve: %d connection(s) refused over the connection limit, %d closed without a whole "
            "request within %g s (totals in GET /info)",
            self.counts["refused"],
            self.counts["timed_out"],
            timeout,
        )
        self.counts = {"refused": 0, "timed_out": 0}


_SUMMARY = _LogSummary()


@dataclass(frozen=True)
class ConnectionLimits:
    """Bounds on the server's connections.

    Args:
        read_timeout: seconds a connection may take to send a whole request (head and body), counted from
            its first byte, or from connecting; then it gets a 408 and is closed.
        max_connections: the most open connections (all HTTP processes together); a request arriving
            beyond them gets a 503.
        keep_alive: seconds an idle keep-alive connection stays open between two requests.
    """

    read_timeout: float = 10.0
    max_connections: int = 256
    keep_alive: float = 5.0

    def __post_init__(self) -> None:
        if not self.read_timeout > 0 or not self.keep_alive > 0:
            raise ValueError(
                f"read_timeout and keep_alive must be positive, got {self.read_timeout} and {self.keep_alive}"
            )
        if self.max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, got {self.max_connections}")


class ConnectionStats:
    """Counters shared by the HTTP processes (created before they are forked): refused and timed out."""

    def __init__(self) -> None:
        self._refused = multiprocessing.Value("q", 0)
        self._timed_out = multiprocessing.Value("q", 0)

    def add(self, refused: int = 0, timed_out: int = 0) -> None:
        """Count ``refused`` (503) and ``timed_out`` (408) connections."""
        for counter, n in ((self._refused, refused), (self._timed_out, timed_out)):
            if n:
                with counter.get_lock():
                    counter.value += n

    def to_dict(self) -> dict[str, int]:
        """``{"refused": n, "timed_out": n}`` since the server started."""
        return {"refused": int(self._refused.value), "timed_out": int(self._timed_out.value)}


class _DropRefusalLines(logging.Filter):
    """Drops uvicorn's log line per refused request: :class:`DeadlineProtocol` counts and sums them up."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "Exceeded concurrency limit."


class DeadlineProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline on reading each request; see the module docstring.

    :func:`protocol_options` makes a subclass with the deadline and the counters set.
    """

    read_timeout: float = ConnectionLimits.read_timeout
    stats: ConnectionStats | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        if not any(isinstance(f, _DropRefusalLines) for f in self.logger.filters):
            self.logger.addFilter(_DropRefusalLines())  # a flood of refusals must not flood the log

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Start the connection's first read deadline."""
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        """The first byte of a request after the previous answer starts the next deadline."""
        if self._deadline is None and self._between_requests():
            self._arm()
        super().data_received(data)

    def on_headers_complete(self) -> None:
        """Count a request that uvicorn answers with 503 (over ``limit_concurrency``)."""
        limit = self.limit_concurrency
        if limit is not None and (len(self.connections) >= limit or len(self.tasks) >= limit):
            self._count("refused")
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        """The answer is sent: uvicorn's keep-alive timeout takes over until the next request begins."""
        self._disarm()
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        """Drop the deadline with the connection."""
        self._disarm()
        super().connection_lost(exc)

    def _between_requests(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.read_timeout, self._on_deadline)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _on_deadline(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        received = not self._between_requests() and not self.cycle.more_body
        if received:  # the whole request is in; the model's time is bounded by --timeout, not here
            return
        if self.cycle is None or self.cycle.response_complete or not self.cycle.response_started:
            body = f"request not received within {self.read_timeout:g} s".encode()
            self.transport.write(
                b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
                b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body
            )
        self.transport.close()
        self._count("timed_out")

    def _count(self, kind: str) -> None:
        if self.stats is not None:
            self.stats.add(**{kind: 1})
        _SUMMARY.count(kind, self.logger, self.loop, self.read_timeout)


def protocol_options(limits: ConnectionLimits, stats: ConnectionStats, http_servers: int) -> dict[str, Any]:
    """The uvicorn options that enforce ``limits`` in each of ``http_servers`` HTTP processes.

    Args:
        limits: the connection limits (``max_connections`` is shared out among the processes).
        stats: where the processes count refused and timed-out connections.
        http_servers: how many HTTP processes share the listening socket.

    Returns:
        ``http`` (the protocol class), ``limit_concurrency`` and ``timeout_keep_alive`` (``uvicorn.Config``).
    """
    protocol = type(
        "DeadlineProtocol",
        (DeadlineProtocol,),
        {"read_timeout": limits.read_timeout, "stats": stats, "__module__": __name__},
    )
    # uvicorn answers 503 once its open connections (this one included) reach limit_concurrency
    per_server = math.ceil(limits.max_connections / max(1, http_servers)) + 1
    return {
        "http": protocol,
        "limit_concurrency": per_server,
        "timeout_keep_alive": max(1, math.ceil(limits.keep_alive)),
    }
