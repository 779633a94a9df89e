"""Webhook sink for dev/services: records every POST, PUT or PATCH it receives, on any path.

Each request becomes one JSON file in the record directory:
    {"method": "POST", "path": "/alertmanager?x=1", "headers": {"content-type": "..."}, "body": "<text>"}
Header names are lower-cased (clients differ in case; tests should not have to). Files appear
atomically (written under a dot-name, then renamed) and their names sort in arrival order.

Answers 200 with a small JSON body, except on a path starting with /status/NNN, which answers NNN
(still recorded): the way to test how a client reports a failing endpoint. GET /-/ready answers 200.

Usage: python3 webhook.py PORT RECORD_DIR
"""

import itertools
import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_BODY = 16 * 1024 * 1024


class Recorder:
    def __init__(self, directory):
        self.directory = directory
        self.lock = threading.Lock()
        self.seq = itertools.count()

    def record(self, entry):
        with self.lock:
            name = f"{time.time_ns():020d}-{next(self.seq):06d}.json"
        tmp = os.path.join(self.directory, "." + name)
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(entry, f)
        os.replace(tmp, os.path.join(self.directory, name))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "runbook-dev-webhook"

    def read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    # Trailers end with an empty line.
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise ValueError(f"body of {length} bytes is over the {MAX_BODY} limit")
        return self.rfile.read(length)

    def answer(self, status, payload):
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def record(self):
        try:
            body = self.read_body()
        except ValueError as e:
            self.close_connection = True
            self.answer(400, {"ok": False, "error": str(e)})
            return
        self.server.recorder.record(
            {
                "method": self.command,
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": body.decode("utf-8", errors="replace"),
            }
        )
        parts = self.path.split("?")[0].split("/")
        if len(parts) > 2 and parts[1] == "status" and parts[2].isdigit() and 200 <= int(parts[2]) <= 599:
            status = int(parts[2])
            self.answer(status, {"ok": status < 400, "error": f"status {status} asked for by the path"})
        else:
            self.answer(200, {"ok": True})

    do_POST = do_PUT = do_PATCH = record

    def do_GET(self):
        if self.path == "/-/ready":
            self.answer(200, {"ready": True})
        else:
            self.answer(404, {"ok": False, "error": "only POST, PUT and PATCH are recorded; GET /-/ready"})


def main():
    port, directory = int(sys.argv[1]), sys.argv[2]
    os.makedirs(directory, exist_ok=True)
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    server.recorder = Recorder(directory)
    # SIGTERM from `dev/services stop`: leave quietly.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"webhook sink on http://127.0.0.1:{port}, recording into {directory}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
