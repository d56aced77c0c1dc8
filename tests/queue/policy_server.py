"""An HTTPS server of MTA-STS policies for tests, on loopback in a thread of its own.

`serving_policies` answers ``GET /.well-known/mta-sts.txt`` by the Host header from
`PolicyServer.policies`: a body (200, text/plain) or a full (status, headers, body)
answer, where a Content-Length of None leaves it out (the body then ends with the
connection); a host it does not know gets a 404. It runs in a thread, so both async tests
and tests of a poczta subprocess can use it; `requests` records (host, path) of each.
"""

from __future__ import annotations

import contextlib
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["Answer", "PolicyServer", "serving_policies"]

Answer = bytes | tuple[int, dict[str, str | None], bytes]  # a None header is not sent


@dataclass
class PolicyServer:
    port: int = 0
    policies: dict[str, Answer] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)


def _handler(server: PolicyServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            host = (self.headers.get("Host") or "").rsplit(":", 1)[0].lower()
            server.requests.append((host, self.path))
            answer = server.policies.get(host) if self.path == "/.well-known/mta-sts.txt" else None
            if answer is None:
                answer = (404, {}, b"not found\n")
            elif isinstance(answer, bytes):
                answer = (200, {"Content-Type": "text/plain"}, answer)
            status, headers, body = answer
            self.send_response(status)
            headers = {"Content-Length": str(len(body)), **headers}
            for name, value in headers.items():
                if value is not None:
                    self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@contextlib.contextmanager
def serving_policies(
    context: ssl.SSLContext, host: str = "127.0.0.1", port: int = 0
) -> Iterator[PolicyServer]:
    """A policy server with certificate `context` on host:port (0: any free port)."""
    state = PolicyServer()
    httpd = ThreadingHTTPServer((host, port), _handler(state))
    httpd.daemon_threads = True
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)
