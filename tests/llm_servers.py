"""Stand-ins for LLM servers, for tests: real HTTP on 127.0.0.1, scripted replies, recorded requests.

`ScriptedLLM("openai")` speaks the OpenAI chat-completions protocol (`POST /v1/chat/completions`, a JSON
reply, or server-sent events `data: {...}` ending with `data: [DONE]` when the request asks to stream);
`ScriptedLLM("ollama")` speaks Ollama's (`POST /api/chat`, a JSON reply, or one JSON object per line).

Each request takes the next scripted reply (a string, or a function of the request body returning one);
when the script runs out the last reply is reused. `delay` makes the server wait before answering (for
timeouts); `status` other than 200 makes it answer with that HTTP error instead (a server that is up but
failing). `pace` waits that long between streamed pieces (a slow model); `drip` sends the reply (streamed
or not) one byte at a time, `drip` seconds apart, so that no read ever waits long (a server trickling bytes).
All are read per request, so a test may change them between requests. A client that hangs up ends the
reply. Use it as a context manager; `requests` holds every request body (parsed JSON), failed ones
included, and `written` the bytes of reply body sent for each answered request.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Reply = str | Callable[[dict], str]


class ScriptedLLM:
    def __init__(self, protocol: str, replies: list[Reply] | None = None, delay: float = 0.0,
                 status: int = 200, pace: float = 0.0, drip: float = 0.0) -> None:
        assert protocol in ("openai", "ollama")
        self.protocol = protocol
        self.replies: list[Reply] = list(replies or ["not found in the articles"])
        self.delay = delay
        self.status = status
        self.pace = pace
        self.drip = drip
        self.requests: list[dict] = []
        self.written: list[int] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    # ---- lifecycle
    def __enter__(self) -> ScriptedLLM:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    @property
    def url(self) -> str:
        """The base url a client is configured with (`/v1` for OpenAI-compatible servers)."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}" + ("/v1" if self.protocol == "openai" else "")

    # ---- what the tests look at
    def prompts(self) -> list[list[dict]]:
        """The chat messages of every request, in order."""
        return [r.get("messages", []) for r in self.requests]

    def last_user_prompt(self) -> str:
        return next(m["content"] for m in reversed(self.requests[-1]["messages"]) if m["role"] == "user")

    # ---- serving
    def next_reply(self, body: dict) -> str:
        with self._lock:
            self.requests.append(body)
            reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        return reply(body) if callable(reply) else reply

    def wait(self, seconds: float | None = None) -> bool:
        """Sleep `seconds` (default `delay`; cut short when stopping); False when the server is stopping."""
        seconds = self.delay if seconds is None else seconds
        return not self._stop.wait(seconds) if seconds else True


class _Stopped(Exception):
    """The server is stopping: the reply ends."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    owner: ScriptedLLM


def tokens_of(text: str) -> list[str]:
    """The reply in small pieces, as a model streams it (words with their spaces, markers apart)."""
    return re.findall(r"\[\d+\]|\s*[^\s\[]+|\s+|\[", text) or [""]


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        owner = self.server.owner
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            self.send_error(400, "bad json")
            return
        expected = "/v1/chat/completions" if owner.protocol == "openai" else "/api/chat"
        if self.path.rstrip("/") != expected:
            self.send_error(404, f"no route {self.path}")
            return
        if owner.status != 200:
            with owner._lock:
                owner.requests.append(body)
            self.send_error(owner.status, "scripted failure")
            return
        reply = owner.next_reply(body)
        if not owner.wait():
            return
        stream = bool(body.get("stream", owner.protocol == "ollama"))
        model = body.get("model", "")
        with owner._lock:
            owner.written.append(0)
            self._slot = len(owner.written) - 1
        try:
            if owner.protocol == "openai":
                self._openai(reply, model, stream)
            else:
                self._ollama(reply, model, stream)
        except (BrokenPipeError, ConnectionResetError, _Stopped):  # the client hung up (or the test ended)
            self.close_connection = True

    def _write(self, data: bytes) -> None:
        """Write part of the body: at once, after `pace`, or one byte at a time every `drip` seconds."""
        owner = self.server.owner
        if owner.pace and not owner.wait(owner.pace):
            raise _Stopped
        for part in ([data[i:i + 1] for i in range(len(data))] if owner.drip else [data]):
            if owner.drip and not owner.wait(owner.drip):
                raise _Stopped
            self.wfile.write(part)
            self.wfile.flush()
            with owner._lock:
                owner.written[self._slot] += len(part)

    def _send(self, status: int, content_type: str, data: bytes | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        if data is not None:
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.flush()
        if data is not None:
            self._write(data)

    def _openai(self, reply: str, model: str, stream: bool) -> None:
        base = {"id": "chatcmpl-test", "created": int(time.time()), "model": model}
        if not stream:
            payload = {**base, "object": "chat.completion", "choices": [{
                "index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
            self._send(200, "application/json", json.dumps(payload).encode())
            return
        self._send(200, "text/event-stream")
        chunks = [{"role": "assistant", "content": ""}] + [{"content": t} for t in tokens_of(reply)]
        for i, delta in enumerate(chunks + [{}]):
            finish = "stop" if i == len(chunks) else None
            event = {**base, "object": "chat.completion.chunk",
                     "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            self._write(f"data: {json.dumps(event)}\n\n".encode())
        self._write(b"data: [DONE]\n\n")

    def _ollama(self, reply: str, model: str, stream: bool) -> None:
        def message(content: str, done: bool) -> dict:
            out = {"model": model, "created_at": "2024-01-01T00:00:00.000000Z",
                   "message": {"role": "assistant", "content": content}, "done": done}
            if done:
                out.update(done_reason="stop", total_duration=1, load_duration=1, prompt_eval_count=1,
                           prompt_eval_duration=1, eval_count=1, eval_duration=1)
            return out

        if not stream:
            self._send(200, "application/json", json.dumps(message(reply, True)).encode())
            return
        self._send(200, "application/x-ndjson")
        for token in tokens_of(reply):
            self._write((json.dumps(message(token, False)) + "\n").encode())
        self._write((json.dumps(message("", True)) + "\n").encode())


def closed_port() -> int:
    """A 127.0.0.1 port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
