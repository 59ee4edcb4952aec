"""Real loopback HTTP servers for download tests (nothing here reaches the internet)."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import threading
from collections.abc import Callable, Iterator
from pathlib import Path


@contextlib.contextmanager
def serve(handler_factory: Callable[..., http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler_factory)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def hub_handler(root: Path, log: list[str]):
    """Answers like the Hugging Face hub's /{org}/{name}/resolve/{rev}/{path} for files under root."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _file(self) -> Path | None:
            parts = self.path.split("?")[0].strip("/").split("/")
            if len(parts) < 5 or parts[2] != "resolve":
                return None
            p = root / parts[0] / parts[1] / "/".join(parts[4:])
            return p if p.is_file() else None

        def _answer(self, body: bool) -> None:
            log.append(f"{self.command} {self.path}")
            p = self._file()
            if p is None:
                self.send_response(404)
                self.send_header("X-Error-Code", "EntryNotFound")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            data = p.read_bytes()
            self.send_response(200)
            self.send_header("X-Repo-Commit", "c0ffee" + "0" * 34)
            self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if body:
                self.wfile.write(data)

        def do_HEAD(self):
            self._answer(False)

        def do_GET(self):
            self._answer(True)

    return Handler


def files_handler(files: dict[str, bytes], *, cut_after: int | None = None, log: list[str] | None = None):
    """Serves fixed files by name; with cut_after, closes the connection mid-file."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            name = self.path.strip("/").split("/")[-1]
            if log is not None:
                log.append(name)
            data = files.get(name)
            if data is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if cut_after is not None:
                self.wfile.write(data[:cut_after])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(data)

    return Handler


def slow_hub(root: Path, delay: float = 0.01):
    """A loopback hub that trickles files out, so a download is still running when we close."""
    import time

    base = hub_handler(root, [])

    class Slow(base):
        def _answer(self, body):
            if not body:
                return super()._answer(False)
            p = self._file()
            if p is None:
                return super()._answer(True)
            data = p.read_bytes()
            self.send_response(200)
            self.send_header("X-Repo-Commit", "c0ffee" + "0" * 34)
            self.send_header("ETag", '"slow"')
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            try:
                for i in range(0, len(data), 2048):
                    self.wfile.write(data[i : i + 2048])
                    time.sleep(delay)
            except (BrokenPipeError, ConnectionResetError):
                pass

    return Slow
