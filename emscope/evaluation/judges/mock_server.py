"""A scripted OpenAI-compatible chat server on loopback, for tests and benchmarks (stdlib only).

    with MockChatServer(lambda n, req: completion(top={"85": -0.1, "90": -2.5})) as srv:
        judge = OpenAICompatJudge("mock", srv.base_url)

The handler gets the request number (from 0) and the parsed request body and returns a
`Reply` (status, body, headers) or a dict (a 200 JSON body). `latency_s` simulates a slow
endpoint. Every request body is kept in `requests`.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    status: int = 200
    body: str | bytes | dict[str, Any] = ""
    headers: dict[str, str] = field(default_factory=dict)


def completion(content: str = "", top: Mapping[str, float] | None = None, model: str = "mock") -> dict[str, Any]:
    """A chat-completions body; with `top`, the first token carries those top log-probabilities."""
    choice: dict[str, Any] = {
        "index": 0,
        "message": {"role": "assistant", "content": content},
        "finish_reason": "stop",
        "logprobs": None,
    }
    if top is not None:
        best = max(top, key=lambda k: top[k])
        choice["message"]["content"] = content or best
        choice["logprobs"] = {
            "content": [
                {
                    "token": best,
                    "logprob": top[best],
                    "bytes": None,
                    "top_logprobs": [{"token": t, "logprob": lp, "bytes": None} for t, lp in top.items()],
                }
            ]
        }
    return {
        "id": "cmpl-mock",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [choice],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


class MockChatServer:
    def __init__(
        self,
        handler: Callable[[int, dict[str, Any]], Reply | dict[str, Any]],
        latency_s: float = 0.0,
        max_requests: int = 10_000,
    ) -> None:
        self.handler, self.latency_s, self.max_requests = handler, latency_s, max_requests
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        outer = self

        class _H(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def _send(self, reply: Reply) -> None:
                body = reply.body
                data = (
                    json.dumps(body).encode()
                    if isinstance(body, dict)
                    else (body.encode() if isinstance(body, str) else body)
                )
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in reply.headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802
                self._send(Reply(200, {"object": "list", "data": [{"id": "mock", "object": "model"}]}))

            def do_POST(self) -> None:  # noqa: N802
                n = int(self.headers.get("Content-Length", 0))
                req = json.loads(self.rfile.read(n) or b"{}")
                with outer._lock:
                    k = len(outer.requests)
                    outer.requests.append(req)
                if k >= outer.max_requests:
                    self._send(Reply(503, {"error": {"message": "request budget of the mock server spent"}}))
                    return
                if outer.latency_s:
                    time.sleep(outer.latency_s)
                r = outer.handler(k, req)
                self._send(r if isinstance(r, Reply) else Reply(200, r))

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _H)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> MockChatServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()
