"""A stand-in for Slack in tests: a Web API server that records calls, and request builders.

`FakeSlack` speaks the Web API over HTTP on 127.0.0.1 (`POST /api/<method>`,
form or JSON bodies, `{"ok": ...}` answers) and keeps the messages posted to
it, so `conversations.replies` and `conversations.history` return real
threads. It also serves response URLs (`POST /response/<id>`). Any call can be
scripted to fail (an error body, or HTTP 429 with Retry-After).

The builders make what Slack sends to an app: event callbacks, slash commands
and block actions, signed with the v0 HMAC scheme.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BOT_USER = "UBOT0001"
BOT_ID = "BBOT0001"
TEAM = "T0000001"
APP_ID = "A0000001"


class _Server(ThreadingHTTPServer):
    request_queue_size = 1024  # Slack takes bursts of calls; the default 5 would reset some connections


@dataclass
class Call:
    method: str
    params: dict
    at: float = field(default_factory=time.monotonic)


@dataclass
class Scripted:
    method: str
    status: int
    body: dict
    headers: dict
    channel: str | None
    times: int


class FakeSlack:
    """The Slack Web API on 127.0.0.1; `url` is the base URL for `WebClient(base_url=...)`."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.messages: dict[str, list[dict]] = {}
        self.scripts: list[Scripted] = []
        self.socket_url = ""  # what apps.connections.open answers (a `FakeSocketMode` sets it)
        self.lock = threading.Condition()
        self._ts = itertools.count(1)
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                if "json" in (self.headers.get("Content-Type") or ""):
                    params = json.loads(raw or "{}")
                else:
                    params = {k: v[-1] for k, v in urllib.parse.parse_qs(raw).items()}
                status, headers, body = fake.handle(self.path, params)
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Type", "application/json" if not isinstance(body, str) else "text/plain")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        self.root = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.url = self.root + "/api/"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    # ---- test controls

    def reset(self) -> None:
        with self.lock:
            self.calls.clear()
            self.scripts.clear()

    def script(self, method: str, body: dict | None = None, status: int = 200, headers: dict | None = None,
               channel: str | None = None, times: int = 1) -> None:
        """The next `times` calls of `method` (in `channel`, if given) get this answer."""
        with self.lock:
            self.scripts.append(Scripted(method, status, body or {"ok": False, "error": "ratelimited"},
                                         headers or {}, channel, times))

    def next_ts(self) -> str:
        return f"{time.time():.0f}.{next(self._ts):06d}"

    def add_message(self, channel: str, text: str, user: str = "U0000USR", thread_ts: str | None = None,
                    **extra) -> dict:
        """A message a person posted (as Slack stores it); returns it."""
        message = {"type": "message", "user": user, "text": text, "ts": self.next_ts(), "team": TEAM, **extra}
        if thread_ts:
            message["thread_ts"] = thread_ts
        with self.lock:
            self.messages.setdefault(channel, []).append(message)
        return message

    def called(self, method: str, **match) -> list[Call]:
        with self.lock:
            return [c for c in self.calls if c.method == method
                    and all(c.params.get(k) == v for k, v in match.items())]

    def wait_for(self, method: str, count: int = 1, timeout: float = 20.0, **match) -> list[Call]:
        deadline = time.monotonic() + timeout
        with self.lock:
            while len(self.called_locked(method, match)) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{method} called {len(self.called_locked(method, match))} times, "
                                         f"expected {count}: {[c.method for c in self.calls]}")
                self.lock.wait(left)
            return self.called_locked(method, match)

    def called_locked(self, method: str, match: dict) -> list[Call]:
        return [c for c in self.calls if c.method == method and all(c.params.get(k) == v for k, v in match.items())]

    # ---- the API

    def handle(self, path: str, params: dict) -> tuple[int, dict, dict | str]:
        if path.startswith("/response/"):
            self._record("response_url", {**params, "path": path})
            return 200, {}, "ok"
        if not path.startswith("/api/"):
            return 404, {}, {"ok": False, "error": "unknown_path"}
        method = path[len("/api/"):]
        for key in ("blocks", "metadata"):
            if isinstance(params.get(key), str):
                params[key] = json.loads(params[key])
        with self.lock:
            scripted = next((s for s in self.scripts if s.method == method and s.times > 0
                             and s.channel in (None, params.get("channel"))), None)
            if scripted:
                scripted.times -= 1
        if scripted:
            self._record(method, {**params, "refused": scripted.body.get("error", scripted.status)})
            return scripted.status, scripted.headers, scripted.body
        body = getattr(self, "api_" + method.replace(".", "_"), lambda p: {"ok": True})(params)
        self._record(method, params)
        return 200, {}, body

    def _record(self, method: str, params: dict) -> None:
        with self.lock:
            self.calls.append(Call(method, params))
            self.lock.notify_all()

    def api_auth_test(self, params: dict) -> dict:
        return {"ok": True, "url": "https://test.slack.com/", "team": "Test", "user": "newsbot", "team_id": TEAM,
                "user_id": BOT_USER, "bot_id": BOT_ID, "is_enterprise_install": False}

    def api_chat_postMessage(self, params: dict) -> dict:
        channel = params["channel"]
        message = {"type": "message", "user": BOT_USER, "bot_id": BOT_ID, "app_id": APP_ID, "text": params["text"],
                   "ts": self.next_ts(), "team": TEAM, "blocks": params.get("blocks", [])}
        if params.get("thread_ts"):
            message["thread_ts"] = params["thread_ts"]
        if params.get("metadata"):
            message["metadata"] = params["metadata"]
        with self.lock:
            self.messages.setdefault(channel, []).append(message)
        return {"ok": True, "channel": channel, "ts": message["ts"], "message": message}

    def api_apps_connections_open(self, params: dict) -> dict:
        if not self.socket_url:
            return {"ok": False, "error": "not_allowed_token_type"}
        return {"ok": True, "url": f"{self.socket_url}?ticket=t{next(self._ts)}"}

    def api_chat_postEphemeral(self, params: dict) -> dict:
        return {"ok": True, "message_ts": self.next_ts()}

    def api_conversations_replies(self, params: dict) -> dict:
        root = params["ts"]
        with self.lock:
            found = [m for m in self.messages.get(params["channel"], []) if root in (m["ts"], m.get("thread_ts"))]
        return {"ok": True, "messages": [self._shown(m, params) for m in sorted(found, key=lambda m: float(m["ts"]))],
                "has_more": False}

    def api_conversations_history(self, params: dict) -> dict:
        latest = float(params.get("latest") or 9e12)
        oldest = float(params.get("oldest") or 0)
        with self.lock:
            found = [m for m in self.messages.get(params["channel"], [])
                     if oldest < float(m["ts"]) < latest and m.get("thread_ts", m["ts"]) == m["ts"]]
        found.sort(key=lambda m: -float(m["ts"]))
        return {"ok": True, "messages": [self._shown(m, params) for m in found[:int(params.get("limit") or 100)]],
                "has_more": False}

    @staticmethod
    def _shown(message: dict, params: dict) -> dict:
        if params.get("include_all_metadata") in (True, "true", "1", 1):
            return message
        return {k: v for k, v in message.items() if k != "metadata"}


class FakeSocketMode:
    """Slack's Socket Mode endpoint on 127.0.0.1, speaking its protocol over a real WebSocket.

    Each connection gets `hello`; `deliver` sends an `events_api` envelope on the newest connection and
    the bot's acks (`{"envelope_id": ...}`) are kept in `acks`. `ask_to_reconnect` sends a `disconnect`
    message (as Slack does before it retires a host); `drop` cuts the TCP connection without a close frame.
    Registers itself as `fake`'s answer to apps.connections.open.
    """

    def __init__(self, fake: FakeSlack) -> None:
        from websockets.sync.server import serve

        self.connections: list = []  # every connection made
        self.live: list = []  # those still open
        self.acks: list[dict] = []
        self.cond = threading.Condition()
        self.server = serve(self._session, "127.0.0.1", 0)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        fake.socket_url = f"ws://127.0.0.1:{self.server.socket.getsockname()[1]}/link/"
        self._envelopes = itertools.count(1)

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join(timeout=5)

    def _session(self, connection) -> None:
        with self.cond:
            self.connections.append(connection)
            self.live.append(connection)
            self.cond.notify_all()
        connection.send(json.dumps({"type": "hello", "num_connections": 1,
                                    "debug_info": {"host": "applink-fake", "approximate_connection_time": 18060},
                                    "connection_info": {"app_id": APP_ID}}))
        try:
            for raw in connection:
                with self.cond:
                    self.acks.append(json.loads(raw))
                    self.cond.notify_all()
        except Exception:  # a dropped connection ends its session
            pass
        finally:
            with self.cond:
                self.live.remove(connection)
                self.cond.notify_all()

    def wait_connections(self, count: int, timeout: float = 20.0) -> None:
        """Until `count` connections were made, one of them still open (and no more closing)."""
        with self.cond:
            if not self.cond.wait_for(lambda: len(self.connections) >= count and len(self.live) == 1, timeout):
                raise AssertionError(f"{len(self.connections)} Socket Mode connections ({len(self.live)} open), "
                                     f"expected {count}")

    def deliver(self, payload: dict, envelope_id: str | None = None, retry_attempt: int = 0) -> str:
        """An Events API envelope on the newest connection; its envelope_id."""
        envelope_id = envelope_id or f"env-{next(self._envelopes):04d}"
        with self.cond:
            connection = self.live[-1]
        connection.send(json.dumps({"envelope_id": envelope_id, "payload": payload, "type": "events_api",
                                    "accepts_response_payload": False, "retry_attempt": retry_attempt,
                                    "retry_reason": "timeout" if retry_attempt else ""}))
        return envelope_id

    def wait_ack(self, envelope_id: str, count: int = 1, timeout: float = 20.0) -> None:
        with self.cond:
            acked = lambda: sum(a.get("envelope_id") == envelope_id for a in self.acks) >= count  # noqa: E731
            if not self.cond.wait_for(acked, timeout):
                raise AssertionError(f"{envelope_id} not acked {count} times: {self.acks}")

    def ask_to_reconnect(self) -> None:
        with self.cond:
            connection = self.live[-1]
        connection.send(json.dumps({"type": "disconnect", "reason": "refresh_requested",
                                    "debug_info": {"host": "applink-fake"}}))

    def drop(self) -> None:
        with self.cond:
            connection = self.live[-1]
        connection.socket.shutdown(socket.SHUT_RDWR)  # no close frame: as a dead network path
        connection.socket.close()


# ---- what Slack sends to the app


def sign(secret: str, body: str, timestamp: int | None = None) -> dict:
    """The v0 signature headers Slack puts on each request."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"v0:{timestamp}:{body}".encode(), hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": str(timestamp), "X-Slack-Signature": f"v0={digest}"}


_event_ids = itertools.count(1)


def event_callback(event: dict, event_id: str | None = None) -> dict:
    event = {**event, "event_ts": event.get("ts", f"{time.time():.6f}")}
    return {
        "token": "legacy-verification-token", "team_id": TEAM, "api_app_id": APP_ID, "event": event,
        "type": "event_callback", "event_id": event_id or f"Ev{next(_event_ids):08d}TEST",
        "event_time": int(time.time()), "event_context": "4-eyJldCI6ImFwcF9tZW50aW9uIn0",
        "authorizations": [{"enterprise_id": None, "team_id": TEAM, "user_id": BOT_USER, "is_bot": True,
                            "is_enterprise_install": False}],
        "is_ext_shared_channel": False,
    }


def mention_event(message: dict, channel: str) -> dict:
    return {"type": "app_mention", "channel": channel, **{k: message[k] for k in message if k != "type"}}


def message_event(message: dict, channel: str, channel_type: str = "channel") -> dict:
    return {**message, "channel": channel, "channel_type": channel_type}


def slash_command(text: str, channel: str, response_url: str, user: str = "U0000USR") -> str:
    return urllib.parse.urlencode({
        "token": "legacy-verification-token", "team_id": TEAM, "team_domain": "test", "channel_id": channel,
        "channel_name": "general", "user_id": user, "user_name": "alex", "command": "/ask", "text": text,
        "api_app_id": APP_ID, "is_enterprise_install": "false", "response_url": response_url,
        "trigger_id": "1111.2222.abcd",
    })


def block_action(message: dict, channel: str, action_id: str, response_url: str, user: str = "U0000USR") -> str:
    button = next(e for b in message["blocks"] if b["type"] == "actions" for e in b["elements"]
                  if e["action_id"] == action_id)
    payload = {
        "type": "block_actions", "user": {"id": user, "username": "alex", "name": "alex", "team_id": TEAM},
        "api_app_id": APP_ID, "token": "legacy-verification-token", "trigger_id": "1111.2222.abcd",
        "container": {"type": "message", "message_ts": message["ts"], "channel_id": channel, "is_ephemeral": False},
        "team": {"id": TEAM, "domain": "test"}, "channel": {"id": channel, "name": "general"},
        "message": message, "response_url": response_url, "state": {"values": {}},
        "actions": [{"action_id": action_id, "block_id": "rag_feedback", "text": button["text"],
                     "value": button["value"], "type": "button", "action_ts": f"{time.time():.6f}"}],
    }
    return urllib.parse.urlencode({"payload": json.dumps(payload)})


def post(url: str, body: str, headers: dict, content_type: str) -> tuple[int, str, float]:
    """POST like Slack does; (status, body, seconds until the response)."""
    request = urllib.request.Request(url, data=body.encode(), method="POST",
                                     headers={"Content-Type": content_type, **headers})
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode(), time.monotonic() - started
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), time.monotonic() - started
