"""A delaying TCP proxy in front of Postgres: loopback in, the server's Unix socket (or TCP) out.

Why: locally a round trip costs ~50 us, against Supabase 20-150 ms, and round trips are what
batching saves. The proxy holds every chunk for a one-way delay in each direction, in order, so
a request/response exchange costs 2 x delay more, while a long stream (COPY) stays pipelined
(chunks are delayed, not serialised). It can also refuse connections (its listening socket is
closed and every open connection cut), which is what "the target is down" looks like to a
client: ECONNREFUSED on connect. Or it can hang: connections are accepted, nothing is forwarded
in either direction, so only the client's own timeouts can end the wait (a half-dead server).

It runs in a child process (`ProxyProcess`), so its event loop never competes for the bench
process's GIL with the code being measured.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import queue
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

CHUNK = 64 * 1024
QUEUE_CHUNKS = 256  # per direction: bounded, so a slow reader pushes back on the writer
LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class Upstream:
    """Where the proxy connects: a Unix socket path, or a loopback host and port."""

    unix_path: str | None = None
    host: str = LOOPBACK
    port: int = 0

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.unix_path is not None:
            return await asyncio.open_unix_connection(self.unix_path, limit=CHUNK)
        return await asyncio.open_connection(self.host, self.port, limit=CHUNK)


class DelayProxy:
    """The proxy itself (one asyncio loop). Use `ProxyProcess` from synchronous code."""

    def __init__(self, upstream: Upstream, *, delay: float = 0.0, port: int = 0) -> None:
        self.upstream = upstream
        self.delay = delay  # seconds, each direction
        self.port = port
        self.refusing = False
        self.flowing = asyncio.Event()  # cleared while hanging
        self.flowing.set()
        self.connections = 0  # accepted so far
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()

    async def start(self) -> int:
        await self._listen()
        return self.port

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, LOOPBACK, self.port, reuse_address=True, limit=CHUNK
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def refuse(self, refusing: bool) -> None:
        """Down: stop listening (connects get ECONNREFUSED) and cut open connections. Up: listen
        again on the same port."""
        if refusing == self.refusing:
            return
        self.refusing = refusing
        if refusing:
            assert self._server is not None
            self._server.close()
            self._server = None
            for writer in list(self._open):
                writer.transport.abort()
            self._open.clear()
        else:
            await self._listen()

    def hang(self, hanging: bool) -> None:
        """Hang: keep accepting, forward nothing (bytes wait, in order, until it ends)."""
        if hanging:
            self.flowing.clear()
        else:
            self.flowing.set()

    async def close(self) -> None:
        self.hang(False)
        await self.refuse(True)

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        # Never end cancelled: asyncio's stream server reads the handler task's exception.
        with contextlib.suppress(asyncio.CancelledError):
            await self._relay(client_r, client_w)

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.connections += 1
        await self.flowing.wait()
        try:
            server_r, server_w = await self.upstream.connect()
        except OSError:
            client_w.transport.abort()
            return
        self._open.update((client_w, server_w))
        try:
            await asyncio.gather(
                self._pipe(client_r, server_w),
                self._pipe(server_r, client_w),
                return_exceptions=True,  # a reset connection is the client's business
            )
        finally:
            for writer in (client_w, server_w):
                self._open.discard(writer)
                writer.transport.abort()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Forward chunks in order, each one `delay` after it arrived."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(QUEUE_CHUNKS)

        async def receive() -> None:
            try:
                while data := await reader.read(CHUNK):
                    await queue.put((loop.time() + self.delay, data))
            finally:
                await queue.put((loop.time() + self.delay, b""))

        receiving = asyncio.create_task(receive())
        try:
            while True:
                due, data = await queue.get()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                await self.flowing.wait()
                if not data:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()
        finally:
            receiving.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError, ConnectionError):
                await receiving


# -- in a child process, driven through its stdin/stdout ---------------------------------------


async def _serve(upstream: Upstream, delay: float) -> None:
    """Child side: one command per line on stdin ("delay S", "refuse 0|1", "hang 0|1",
    "stop"), one reply
    per line on stdout. Stdin closing (the bench died) stops the proxy too."""
    loop = asyncio.get_running_loop()
    commands = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(commands), sys.stdin)
    proxy = DelayProxy(upstream, delay=delay)
    print(f"ready {await proxy.start()}", flush=True)
    while line := (await commands.readline()).decode().strip():
        command, _, argument = line.partition(" ")
        if command == "delay":
            proxy.delay = float(argument)
        elif command == "refuse":
            await proxy.refuse(argument == "1")
        elif command == "hang":
            proxy.hang(argument == "1")
        elif command == "stop":
            break
        print(f"ok {proxy.connections}", flush=True)
    await proxy.close()
    print(f"ok {proxy.connections}", flush=True)


class ProxyProcess:
    """The proxy in a child process (`python -m bench.proxy`), driven from synchronous code."""

    def __init__(self, upstream: Upstream, *, delay: float = 0.0, timeout: float = 10.0) -> None:
        self.upstream = upstream
        self.timeout = timeout
        self._delay = delay
        where = (
            ["--unix", upstream.unix_path] if upstream.unix_path else ["--port", str(upstream.port)]
        )
        self._process = subprocess.Popen(
            [sys.executable, "-m", "bench.proxy", *where, "--delay", str(delay)],
            cwd=Path(__file__).resolve().parents[1],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, name="bench-proxy-replies", daemon=True).start()
        self.port = int(self._reply("ready"))

    def _pump(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            self._lines.put(line.strip())
        self._lines.put("")  # EOF: the child is gone

    @property
    def delay(self) -> float:
        return self._delay

    def _reply(self, expected: str = "ok") -> str:
        try:
            line = self._lines.get(timeout=self.timeout)
        except queue.Empty:
            line = ""
        kind, _, value = line.partition(" ")
        if kind != expected:
            self.stop()
            raise RuntimeError(f"the proxy answered {line!r} (exit code {self._process.poll()})")
        return value

    def _send(self, command: str) -> str:
        assert self._process.stdin is not None
        self._process.stdin.write(command + "\n")
        self._process.stdin.flush()
        return self._reply()

    def set_delay(self, seconds: float) -> None:
        self._delay = seconds
        self._send(f"delay {seconds}")

    def refuse(self, refusing: bool = True) -> None:
        self._send(f"refuse {int(refusing)}")

    def hang(self, hanging: bool = True) -> None:
        self._send(f"hang {int(hanging)}")

    def stop(self) -> None:
        if self._process.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                assert self._process.stdin is not None
                self._process.stdin.write("stop\n")
                self._process.stdin.close()
            try:
                self._process.wait(self.timeout)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    def __enter__(self) -> ProxyProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def unix_socket_of(host_dir: str | Path, port: int | str | None = None) -> str:
    """The server's socket file in `host_dir` (libpq's rule: `.s.PGSQL.<port>`)."""
    folder = Path(host_dir)
    if port is not None:
        return str(folder / f".s.PGSQL.{port}")
    found = sorted(p for p in folder.glob(".s.PGSQL.*") if not p.name.endswith(".lock"))
    if not found:
        raise FileNotFoundError(f"no Postgres socket in {folder}")
    return str(found[0])


def main() -> None:
    parser = argparse.ArgumentParser(description="delaying loopback proxy (driven on stdin)")
    parser.add_argument("--unix", help="upstream Unix socket path")
    parser.add_argument("--port", type=int, default=0, help="upstream loopback port")
    parser.add_argument("--delay", type=float, default=0.0, help="one-way delay, seconds")
    args = parser.parse_args()
    asyncio.run(_serve(Upstream(unix_path=args.unix, port=args.port), args.delay))


if __name__ == "__main__":
    main()
