"""The event benchmark's clients: many HTTP/1.1 connections in one asyncio process, driven
by bench/events.py over a pipe.

Raw sockets (asyncio streams, uvloop when installed), no HTTP library: a stream client
sends one GET and reads the chunked response as it comes, cutting it into Server-Sent
Events messages; a polling client sends a GET every `interval` seconds on a kept-alive
connection and reads each answer by its Content-Length. What a stream client keeps per
message is its id and the wall-clock time (`time.time()`, the machine's clock, which
PostgreSQL's `now()` also reads) of the read that completed it; each message's data is
parsed once per process (its type, job id and `created_at`).

Commands (tuples over the pipe) and answers:
- ("open", host, port, path, headers, count, concurrency, timeout) -> ("opened", ok, errors):
  `count` streams, at most `concurrency` opening at a time; answered once each has its
  response headers (ok) or failed (errors: a list of reasons).
- ("streams",) -> ("streams", received, meta, closed): every stream's (id, time) list,
  {id: (type, job_id, created_at)} of the messages seen, and how many streams the server
  closed; recording goes on.
- ("close",) -> ("closed", n): every stream closed.
- ("poll", host, port, path_headers, seconds, interval, timeout) -> ("polled", requests):
  one polling client per (path, headers) for `seconds`: (start, seconds, status) of every
  request (status 0: the connection failed; -1: still unanswered `timeout` seconds after
  the end).
- ("stop",) -> the process ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from datetime import datetime
from typing import Any


def _wall(value: str | None) -> float | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


class StreamClient:
    """One Server-Sent Events connection."""

    def __init__(self, meta: dict[int, tuple[str, str | None, float | None]]) -> None:
        self.meta = meta  # shared by the process's clients: each message parsed once
        self.received: list[tuple[int, float]] = []
        self.closed_by_server = False
        self.task: asyncio.Task[None] | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(
        self, host: str, port: int, path: str, headers: dict[str, str]
    ) -> asyncio.StreamReader:
        reader, writer = await asyncio.open_connection(host, port)
        self.writer = writer
        lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Accept: text/event-stream"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = await reader.readuntil(b"\r\n\r\n")
        status_line, _, rest = head.decode("latin-1").partition("\r\n")
        status = int(status_line.split()[1])
        if status != 200:
            raise RuntimeError(f"HTTP {status}")
        if "transfer-encoding: chunked" not in rest.lower():
            raise RuntimeError("the stream is not chunked")
        return reader

    async def follow(self, reader: asyncio.StreamReader) -> None:
        """Read the chunked body until the server closes it (or the task is cancelled)."""
        raw = b""  # bytes of the chunked encoding not yet decoded
        text = b""  # decoded body not yet cut into messages
        data_left = -1  # bytes of the current chunk still to come; -1: a size line next
        crlf_left = 0  # bytes of the CRLF after the chunk still to come
        while True:
            data = await reader.read(65536)
            if not data:
                self.closed_by_server = True
                return
            now = time.time()
            raw += data
            while raw:
                if data_left < 0:
                    end = raw.find(b"\r\n")
                    if end < 0:
                        break
                    size = int(raw[:end].split(b";")[0], 16)
                    raw = raw[end + 2 :]
                    if size == 0:
                        self.closed_by_server = True
                        return
                    data_left, crlf_left = size, 2
                if data_left > 0:
                    piece = raw[:data_left]
                    text += piece
                    raw = raw[len(piece) :]
                    data_left -= len(piece)
                    if data_left:
                        break
                skipped = min(crlf_left, len(raw))
                raw = raw[skipped:]
                crlf_left -= skipped
                if crlf_left:
                    break
                data_left = -1
            while True:
                end = text.find(b"\n\n")
                if end < 0:
                    break
                block, text = text[:end], text[end + 2 :]
                self._message(block, now)

    def _message(self, block: bytes, now: float) -> None:
        seq: int | None = None
        data = b""
        kind = ""
        for line in block.split(b"\n"):
            if line.startswith(b"id:"):
                with contextlib.suppress(ValueError):
                    seq = int(line[3:].strip())
            elif line.startswith(b"event:"):
                kind = line[6:].strip().decode()
            elif line.startswith(b"data:"):
                data = line[5:].strip()
        if seq is None:
            return  # a comment, a retry hint, a message without an id (ready, reset)
        self.received.append((seq, now))
        if seq not in self.meta:
            try:
                message: dict[str, Any] = json.loads(data) if data else {}
            except ValueError:
                message = {}
            self.meta[seq] = (
                message.get("type") or kind,
                message.get("job_id"),
                _wall(message.get("created_at")),
            )

    def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        if self.writer is not None:
            self.writer.close()


class Pool:
    def __init__(self) -> None:
        self.streams: list[StreamClient] = []
        self.meta: dict[int, tuple[str, str | None, float | None]] = {}

    async def open(
        self,
        host: str,
        port: int,
        path: str,
        headers: dict[str, str],
        count: int,
        concurrency: int,
        timeout: float,
    ) -> tuple[int, list[str]]:
        gate = asyncio.Semaphore(concurrency)
        errors: list[str] = []
        ok = 0

        async def one() -> None:
            nonlocal ok
            client = StreamClient(self.meta)
            async with gate:
                try:
                    reader = await asyncio.wait_for(client.open(host, port, path, headers), timeout)
                except Exception as exc:  # counted and reported
                    errors.append(f"{type(exc).__name__}: {exc}")
                    client.close()
                    return
            ok += 1
            self.streams.append(client)
            client.task = asyncio.create_task(self._follow(client, reader))

        await asyncio.gather(*(one() for _ in range(count)))
        return ok, errors

    async def _follow(self, client: StreamClient, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(asyncio.CancelledError, ConnectionError, OSError):
            await client.follow(reader)

    def snapshot(self) -> tuple[list[list[tuple[int, float]]], dict[int, Any], int]:
        return (
            [list(client.received) for client in self.streams],
            dict(self.meta),
            sum(1 for client in self.streams if client.closed_by_server),
        )

    async def close(self) -> int:
        count = len(self.streams)
        for client in self.streams:
            client.close()
        await asyncio.sleep(0.2)
        self.streams = []
        return count


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """One response: (status, whether the connection stays open)."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    status = int(head.split(None, 2)[1])
    length = 0
    keep = True
    for line in head.split("\r\n")[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value.strip())
        elif name == "connection" and value.strip().lower() == "close":
            keep = False
    if length:
        await reader.readexactly(length)
    return status, keep


async def poll(
    host: str,
    port: int,
    path: str,
    headers: dict[str, str],
    until: float,
    interval: float,
    timeout: float,
    out: list[tuple[float, float, int]],
) -> None:
    """GET `path` every `interval` seconds (or right after the answer, if it came later)
    until `until`. A request still unanswered at `until` + `timeout` is given up (status
    -1); a failed connection is status 0, and the next request opens a new one."""
    request = (
        "\r\n".join(
            [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Accept: application/json"]
            + [f"{name}: {value}" for name, value in headers.items()]
        ).encode()
        + b"\r\n\r\n"
    )
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    tick = time.time()
    try:
        while time.time() < until:
            started = time.time()
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(host, port)
                assert reader is not None
                writer.write(request)
                status, keep = await asyncio.wait_for(
                    _read_response(reader), until + timeout - time.time()
                )
            except TimeoutError:
                status, keep = -1, False
            except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
                status, keep = 0, False
            out.append((started, time.time() - started, status))
            if not keep and writer is not None:
                writer.close()
                reader = writer = None
            tick += interval
            await asyncio.sleep(max(0.0, tick - time.time()))
            tick = max(tick, time.time() - interval)  # late: the next one right away, no burst
    finally:
        if writer is not None:
            writer.close()


async def serve(conn: Any) -> None:
    loop = asyncio.get_running_loop()
    pool = Pool()
    while True:
        command = await loop.run_in_executor(None, conn.recv)
        name = command[0]
        if name == "open":
            _, host, port, path, headers, count, concurrency, timeout = command
            ok, errors = await pool.open(host, port, path, headers, count, concurrency, timeout)
            conn.send(("opened", ok, errors))
        elif name == "streams":
            conn.send(("streams", *pool.snapshot()))
        elif name == "close":
            conn.send(("closed", await pool.close()))
        elif name == "poll":
            _, host, port, targets, seconds, interval, timeout = command
            out: list[tuple[float, float, int]] = []
            until = time.time() + seconds
            await asyncio.gather(
                *(
                    poll(host, port, path, headers, until, interval, timeout, out)
                    for path, headers in targets
                )
            )
            conn.send(("polled", out))
        elif name == "stop":
            await pool.close()
            conn.send(("stopped",))
            return


def main(conn: Any) -> None:
    """The child process (its open-files limit is the bench's, raised): serve the pipe's
    commands (uvloop if installed)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is locked with uvicorn
        asyncio.run(serve(conn))
    else:
        uvloop.run(serve(conn))
