"""The control socket: how ``kittiwake queue`` reaches the running server.

Owns ``ControlServer`` (a Unix socket at ``<data_dir>/control.sock``, mode 0600), its
request handling over a ``QueueAdmin`` (the scheduler's admin methods), and ``request``,
the small synchronous client the CLI uses.

Protocol: line-delimited JSON, one request per line, one response line each, any number
per connection. Requests: ``{"op": "list" | "summary"}``, ``{"op": "show" | "hold" |
"release" | "delete" | "retry" | "bounce", "queue_id": ID}``, ``{"op": "flush",
"domain": D}`` (``domain`` optional; ``.example.org`` means its subdomains). Responses:
``{"ok": true, "result": ...}`` or ``{"ok": false, "error": "..."}``. ``list``/``show``
results are ``queue_view.message_json`` objects; ``summary`` is ``queue_view.summarize``.

Security: MEDIUM-HIGH. Whoever can connect can delete mail, so the socket is created
0600 (bound in a private 0700 directory, then renamed into place: there is no moment at
which it exists with looser permissions) and the file system is the access check.
Requests are bounded (``max_request`` octets a line, an idle timeout), strictly
validated (queue ids must pass ``is_queue_id``, domains the config's domain syntax), and
a failing admin call is answered as an error, never allowed to take the server down.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from kittiwake.admin.queue_view import Json, message_json, summarize
from kittiwake.config_check import is_domain
from kittiwake.delivery.api import QueuedMessage
from kittiwake.queue.ids import is_queue_id

log = logging.getLogger("kittiwake.admin")

SOCKET_NAME = "control.sock"
MAX_REQUEST = 4096  # octets in one request line
IDLE_TIMEOUT = 60.0  # seconds a connection may sit without a request
MAX_SUN_PATH = 107  # sockaddr_un.sun_path is 108 octets with its NUL (Linux)
ID_OPS = ("show", "hold", "release", "delete", "retry", "bounce")
OPS = ("list", "summary", "flush", "pickup", *ID_OPS)
_FIELD = {"flush": "domain", **{op: "queue_id" for op in ID_OPS}}  # each op's one argument


class QueueAdmin(Protocol):
    """What the control socket asks of the scheduler (``queue.scheduler.Scheduler``)."""

    async def list_queue(self) -> list[QueuedMessage]: ...
    async def show(self, queue_id: str) -> QueuedMessage | None: ...
    async def flush(self, domain: str | None = None) -> int: ...
    async def hold(self, queue_id: str) -> bool: ...
    async def release(self, queue_id: str) -> bool: ...
    async def delete(self, queue_id: str) -> bool: ...
    async def retry(self, queue_id: str) -> bool: ...
    async def bounce(self, queue_id: str) -> bool: ...


class ControlError(Exception):
    """A request failed; the message is for the operator."""


class ServerDown(ControlError):
    """Nothing listens on the control socket (it is missing, or refuses connections)."""


class RequestError(Exception):
    """A malformed or unacceptable request (answered, not raised to the client loop)."""


def socket_path(data_dir: Path) -> Path:
    return Path(data_dir) / SOCKET_NAME


# ------------------------------------------------------------------------------ server


class ControlServer:
    """Serve ``admin`` on a Unix socket at ``path``: ``await start()``, ``await stop()``."""

    def __init__(
        self,
        path: Path,
        admin: QueueAdmin,
        *,
        clock: Callable[[], float] = time.time,
        max_request: int = MAX_REQUEST,
        idle_timeout: float = IDLE_TIMEOUT,
        on_pickup: Callable[[], None] | None = None,
    ) -> None:
        self.path = Path(path)
        self.on_pickup = on_pickup
        self.admin = admin
        self.clock = clock
        self.max_request = max_request
        self.idle_timeout = idle_timeout
        self._server: asyncio.AbstractServer | None = None
        self._inode: int | None = None
        self._clients: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Bind 0600 in a private directory, listen, then rename into ``path``."""
        if len(os.fsencode(self.path)) > MAX_SUN_PATH:
            raise OSError(f"control socket path too long for a Unix socket: {self.path}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        private = Path(tempfile.mkdtemp(prefix=".ctl", dir=self.path.parent))  # mode 0700
        temp = private / "s"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(temp))
            os.chmod(temp, 0o600)
            self._server = await asyncio.start_unix_server(
                self._on_client, sock=sock, limit=self.max_request
            )
            os.replace(temp, self.path)  # atomic; replaces a stale socket of a dead server
            self._inode = os.stat(self.path).st_ino
        except BaseException:
            sock.close()
            if self._server is not None:
                self._server.close()
                self._server = None
            raise
        finally:
            with contextlib.suppress(OSError):
                temp.unlink()
            with contextlib.suppress(OSError):
                private.rmdir()
        log.info("control socket listening on %s", self.path)

    async def stop(self) -> None:
        """Stop listening, end open connections, remove the socket file (if still ours)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for task in list(self._clients):
            task.cancel()
        await asyncio.gather(*self._clients, return_exceptions=True)
        await server.wait_closed()
        with contextlib.suppress(OSError):
            if os.stat(self.path).st_ino == self._inode:
                self.path.unlink()

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients.add(task)
        # The task must end normally even when stop() cancels it: Python 3.11's stream
        # callback calls task.exception() on it, which raises for a cancelled task.
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._clients.discard(task)
            writer.close()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                async with asyncio.timeout(self.idle_timeout):
                    line = await reader.readline()
            except TimeoutError:
                return
            except ValueError:  # longer than max_request: answer, then hang up
                await _reply(writer, _error(f"request longer than {self.max_request} octets"))
                return
            if not line:
                return
            if line.strip():
                await _reply(writer, await self.handle_line(line))

    async def handle_line(self, line: bytes) -> Json:
        """One request line → its response object (never raises)."""
        try:
            request = json.loads(line)
        except (UnicodeDecodeError, json.JSONDecodeError):
            return _error("request is not valid JSON")
        try:
            return {"ok": True, "result": await self.handle(request)}
        except RequestError as e:
            return _error(str(e))
        except Exception as e:  # a failing admin call must not take the server down
            log.exception("control request %r failed", request)
            return _error(f"internal error: {e.__class__.__name__}: {e}")

    async def handle(self, request: object) -> Any:
        """Run one decoded request; its result, or RequestError."""
        if not isinstance(request, dict):
            raise RequestError('a request is a JSON object like {"op": "list"}')
        op = request.get("op")
        if op not in OPS:
            raise RequestError(f"unknown op {op!r}; one of {', '.join(OPS)}")
        extra = sorted(set(request) - {"op", _FIELD.get(op, "op")})
        if extra:
            raise RequestError(f"unexpected field(s) for {op}: {', '.join(map(str, extra))}")
        admin = self.admin
        if op == "list":
            return [message_json(m) for m in await admin.list_queue()]
        if op == "summary":
            messages = [message_json(m) for m in await admin.list_queue()]
            return summarize(messages, self.clock())
        if op == "pickup":  # sendmail dropped a file: scan the maildrop now
            if self.on_pickup is None:
                raise RequestError("no pickup service")
            self.on_pickup()
            return True
        if op == "flush":
            domain = _domain(request.get("domain"))
            count = await admin.flush(domain)
            log.info("control: flush %s: %d messages", domain or "(all)", count)
            return count
        queue_id = request.get("queue_id")
        if not isinstance(queue_id, str) or not is_queue_id(queue_id):
            raise RequestError(f"invalid queue id {queue_id!r}")
        if op == "show":
            message = await admin.show(queue_id)
            if message is None:
                raise RequestError(f"no such message: {queue_id}")
            return message_json(message)
        if not await getattr(admin, op)(queue_id):
            message = await admin.show(queue_id)  # why not? say it plainly
            if message is None:
                raise RequestError(f"no such message: {queue_id}")
            if message.held and op == "retry":
                raise RequestError(f"{queue_id} is held; release it first")
            raise RequestError(f"{op} {queue_id}: nothing to do")
        log.info("control: %s %s", op, queue_id)
        return True


def _domain(value: object) -> str | None:
    """``None``, ``example.org`` or ``.example.org`` (its subdomains), lower-cased."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        name = value.lower().rstrip(".")
        if is_domain(name.removeprefix(".")):
            return name
    raise RequestError(f"invalid domain {value!r}")


def _error(text: str) -> Json:
    return {"ok": False, "error": text}


async def _reply(writer: asyncio.StreamWriter, response: Json) -> None:
    writer.write(json.dumps(response).encode("ascii") + b"\n")
    await writer.drain()


# ------------------------------------------------------------------------------ client


def request(
    path: Path, op: str, args: Mapping[str, object] | None = None, *, timeout: float = 60.0
) -> Any:
    """Send ``{"op": op, **args}`` to the control socket at ``path``; its ``result``.

    Raises ``ServerDown`` when nothing listens there, ``ControlError`` for every other
    failure (the server's error text, a timeout, a broken answer).
    """
    payload = {"op": op, **{k: v for k, v in (args or {}).items() if v is not None}}
    data = bytearray()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
            sock.sendall(json.dumps(payload).encode("ascii") + b"\n")
            while not data.endswith(b"\n"):
                chunk = sock.recv(1 << 16)
                if not chunk:
                    break
                data += chunk
    except (FileNotFoundError, ConnectionRefusedError):
        raise ServerDown(f"server not running (no control socket at {path})") from None
    except TimeoutError:
        raise ControlError(f"the server did not answer within {timeout:g} s") from None
    except OSError as e:
        raise ControlError(f"cannot use the control socket {path}: {e.strerror or e}") from None
    try:
        response = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ControlError("the server sent a malformed answer") from None
    if not isinstance(response, dict) or "ok" not in response:
        raise ControlError("the server sent a malformed answer")
    if not response["ok"]:
        raise ControlError(str(response.get("error", "request failed")))
    return response.get("result")
