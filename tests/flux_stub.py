"""A local HTTP server standing in for InfluxDB 2's query endpoint: it
replays a recorded annotated-CSV answer (every RFC3339 timestamp shifted by
``shift_s``, so recorded data can be made recent) and keeps the requests it
got. influxdb-client talks to it over real HTTP and parses the answer with
its own FluxCsvParser."""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_RFC3339 = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?Z")


def shift_rfc3339(text: str, shift_s: int) -> str:
    def repl(m: re.Match[str]) -> str:
        t = datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
        return (t + timedelta(seconds=shift_s)).strftime("%Y-%m-%dT%H:%M:%S") + (m.group(2) or "") + "Z"

    return _RFC3339.sub(repl, text)


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class FluxStub:
    status: int = 200
    body: str = ""
    content_type: str = "text/csv; charset=utf-8"
    shift_s: int = 0
    requests: list[Recorded] = field(default_factory=list)

    def start(self) -> str:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                stub.requests.append(Recorded(self.path, dict(self.headers), json.loads(raw or b"{}")))
                payload = shift_rfc3339(stub.body, stub.shift_s).encode()
                self.send_response(stub.status)
                self.send_header("Content-Type", stub.content_type)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
