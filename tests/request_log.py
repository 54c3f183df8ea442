"""An HTTP server that logs every request it gets, for the attack tests: a URL that only
an attack would reach is pointed here, and the log must stay empty. It listens on
loopback, or on `host` (this machine's own address on its network, for a test of what
may cross the network)."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class RequestLog:
    """Answers every GET and POST with `reply` (a small JSON object) and records
    (method, path with query, headers)."""

    def __init__(self, reply: bytes = b'{"type": "object"}', host: str = "127.0.0.1") -> None:
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        log = self.requests

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                log.append((self.command, self.path, dict(self.headers)))
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            do_GET = do_POST = _answer

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer((host, 0), Handler)
        self.url = f"http://{host}:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
