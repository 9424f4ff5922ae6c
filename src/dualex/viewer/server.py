"""The local viewer: a small standard-library HTTP server over directories of explanation files.

Routes (GET and HEAD only)::

    /                          the page (static/index.html)
    /static/viewer.js|.css     its script and style (a fixed list; nothing else is served from disk)
    /api/pairs                 the catalogue: pairs of (image, caption), each with its explanation files
    /api/explanation?file=F    one explanation as JSON (F: path relative to the served directory;
                               with several roots, ``label/path`` relative to the root ``label`` names)
    /contrast.html             the contrast page: a saved `dualex.Contrast` side by side (difference, A, B)
    /api/contrasts             the saved contrast folders (`dualex.viewer.contrasts`)
    /api/contrast?name=N       one contrast as JSON (N: its folder, named like a file)

Safety: the server binds to 127.0.0.1 unless told otherwise, and then answers only requests whose
``Host`` header names the loopback address (a DNS-rebinding guard). File names from the client go
through `dualex.viewer.catalog.Sources.resolve` and `dualex.viewer.paths.resolve_under` (403 outside the
root, including via ``..``, absolute paths, percent-encoded dots and symbolic links; 404 for an unknown
root label and for anything that is not an explanation file; with several roots each file must lie under
the root its label names). Error messages name roots by label (``.`` for a single root), never by their
absolute path. There are no
uploads: POST, PUT, PATCH and DELETE get 405 without their body being read, and a GET with a body over
`MAX_BODY` bytes is refused with 413. Responses carry a Content-Security-Policy that allows no
third-party origin.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from dualex.errors import InputError
from dualex.viewer.catalog import Root, Sources
from dualex.viewer.paths import Forbidden, NotFound

STATIC_FILES = {
    "viewer.js": "text/javascript; charset=utf-8",
    "viewer.css": "text/css; charset=utf-8",
    "contrast.js": "text/javascript; charset=utf-8",
}
MAX_BODY = 1024  # bytes a GET/HEAD may carry (nothing is uploaded)
MAX_QUERY = 4096  # characters of a query string
LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def static_text(name: str) -> str:
    """A file of the page (``index.html``, ``viewer.js``, ``viewer.css``) from the package."""
    return resources.files("dualex.viewer").joinpath("static", name).read_text(encoding="utf-8")


class ViewerServer(ThreadingHTTPServer):
    """HTTP server holding the catalogue of one or several roots (directories or single files)."""

    daemon_threads = True

    def __init__(
            self,
            source: str | Path | Sequence[str | Path],
            host: str = "127.0.0.1",
            port: int = 8765,
            *,
            quiet: bool = False,
    ) -> None:
        self.sources = Sources.open(source, verb="serve")
        self.catalog = self.sources  # `groups()` of every root
        self.root = self.sources.roots[0].path  # the (first) served directory
        self.quiet = quiet
        self.loopback_only = host.strip("[]") in LOOPBACK
        self._payloads: OrderedDict[tuple[str, str, int, int], dict[str, Any]] = OrderedDict()
        self._payload_lock = threading.Lock()
        if ":" in host.strip("[]"):
            self.address_family = socket.AF_INET6
        super().__init__((host.strip("[]"), port), ViewerHandler)

    @property
    def url(self) -> str:
        """The address to open in a browser (``http://HOST:PORT/``)."""
        host, port = self.server_address[:2]
        if isinstance(host, bytes):  # AF_UNIX-style addresses; an HTTP server has a str host
            host = host.decode()
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
        if ":" in str(shown):
            shown = f"[{shown}]"
        return f"http://{shown}:{port}/"

    def payload(self, root: Root, path: Path) -> dict[str, Any]:
        """The JSON of one explanation file, cached (32 files) by root, path, size and modification time."""
        st = path.stat()
        key = (root.label, str(path), st.st_size, st.st_mtime_ns)
        with self._payload_lock:
            if key in self._payloads:
                self._payloads.move_to_end(key)
                return self._payloads[key]
        data = self.sources.load(root, path)
        with self._payload_lock:
            self._payloads[key] = data
            while len(self._payloads) > 32:
                self._payloads.popitem(last=False)
        return data


class ViewerHandler(BaseHTTPRequestHandler):
    """HTTP request handler of the viewer: answers GET and HEAD, refuses writes with 405 (see the module docstring)."""

    server: ViewerServer
    server_version = "dualex-viewer"
    sys_version = ""

    # ------------------------------------------------------------------------------------------ plumbing
    def log_message(self, format: str, *args: Any) -> None:
        """Log a request to stderr as ``dualex serve: ADDRESS MESSAGE``, unless the server is quiet."""
        if not self.server.quiet:
            sys.stderr.write(f"dualex serve: {self.address_string()} {format % args}\n")

    def _send(self, status: int, body: bytes, content_type: str, *, head: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _json(self, status: int, data: Any, *, head: bool = False) -> None:
        self._send(status, json.dumps(data, allow_nan=False).encode("utf-8"), "application/json", head=head)

    def _error(self, status: HTTPStatus, message: str, *, head: bool = False) -> None:
        self._json(int(status), {"error": message, "status": int(status)}, head=head)

    def _host_ok(self) -> bool:
        if not self.server.loopback_only:
            return True
        host = (self.headers.get("Host") or "").strip().lower()
        if host.startswith("["):
            name = host[: host.find("]") + 1]
        else:
            name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
        return name in LOOPBACK

    # ------------------------------------------------------------------------------------------ methods
    def do_GET(self) -> None:
        """Serve a GET request (pages, the catalog API, explanation data)."""
        self._handle(head=False)

    def do_HEAD(self) -> None:
        """Serve a HEAD request (the headers of the GET answer)."""
        self._handle(head=True)

    def _refuse_write(self) -> None:
        self.close_connection = True  # the body is never read
        self._error(HTTPStatus.METHOD_NOT_ALLOWED, "this viewer is read-only; uploads are not supported")

    do_POST = do_PUT = do_PATCH = do_DELETE = _refuse_write  # noqa: N815 - http.server's naming

    def _handle(self, *, head: bool) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = MAX_BODY + 1
        if length > MAX_BODY:
            self.close_connection = True
            return self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "request body too large", head=head)
        if not self._host_ok():
            return self._error(HTTPStatus.FORBIDDEN, "unexpected Host header", head=head)
        path, _, query = self.path.partition("?")
        if len(query) > MAX_QUERY:
            return self._error(HTTPStatus.REQUEST_URI_TOO_LONG, "query too long", head=head)
        try:
            if path in ("/", "/index.html"):
                return self._send(HTTPStatus.OK, static_text("index.html").encode(), "text/html; charset=utf-8",
                                  head=head)
            if path.startswith("/static/"):
                name = path[len("/static/"):]
                if name not in STATIC_FILES:
                    return self._error(HTTPStatus.NOT_FOUND, "no such file", head=head)
                return self._send(HTTPStatus.OK, static_text(name).encode(), STATIC_FILES[name], head=head)
            if path == "/api/pairs":
                return self._json(HTTPStatus.OK, self._pairs(), head=head)
            if path == "/api/explanation":
                return self._explanation(query, head=head)
            if path == "/contrast.html":
                return self._send(HTTPStatus.OK, static_text("contrast.html").encode(), "text/html; charset=utf-8",
                                  head=head)
            if path == "/api/contrasts":
                from dualex.viewer.contrasts import list_contrasts

                return self._json(HTTPStatus.OK, {"contrasts": list_contrasts(self.server.sources)}, head=head)
            if path == "/api/contrast":
                return self._contrast(query, head=head)
            return self._error(HTTPStatus.NOT_FOUND, "no such page", head=head)
        except (BrokenPipeError, ConnectionResetError):
            return None

    def _pairs(self) -> dict[str, Any]:
        sources = self.server.sources
        if sources.single:
            return {"root": self.server.root.name, "pairs": sources.groups()}
        labels = [r.label for r in sources.roots]
        return {"root": " + ".join(labels), "roots": labels, "pairs": sources.groups()}

    def _explanation(self, query: str, *, head: bool) -> None:
        def load(name: str) -> Any:
            root, path = self.server.sources.resolve(name)
            return self.server.payload(root, path)

        return self._named(query, "file", load, "no such explanation file", head=head)

    def _contrast(self, query: str, *, head: bool) -> None:
        from dualex.viewer.contrasts import load_contrast

        return self._named(query, "name", lambda name: load_contrast(self.server.sources, name), "no such contrast",
                           head=head)  # fmt: skip

    def _named(self, query: str, field: str, load: Callable[[str], Any], missing: str, *, head: bool) -> None:
        """Reply with ``load(NAME)`` as JSON for ``?FIELD=NAME``, or with the error in plain words.

        Exactly one ``FIELD`` is required (400 otherwise); `Forbidden` is 403, `NotFound` 404 (``missing``),
        `InputError` 422 and any other failure 500, each with its (scrubbed) message.
        """
        try:
            names = parse_qs(query, keep_blank_values=True, max_num_fields=4).get(field, [])
        except ValueError:  # more fields than max_num_fields
            return self._error(HTTPStatus.BAD_REQUEST, f"too many query fields; give exactly one ?{field}=", head=head)
        if len(names) != 1:
            return self._error(HTTPStatus.BAD_REQUEST, f"give exactly one ?{field}=", head=head)
        try:
            data = load(names[0])
        except Forbidden as exc:
            return self._error(HTTPStatus.FORBIDDEN, str(exc), head=head)
        except NotFound:
            return self._error(HTTPStatus.NOT_FOUND, missing, head=head)
        except InputError as exc:
            return self._error(HTTPStatus.UNPROCESSABLE_ENTITY, self.server.sources.scrub(str(exc)), head=head)
        except Exception as exc:  # never an empty reply: the page shows the message
            msg = self.server.sources.scrub(f"cannot show {names[0]} ({type(exc).__name__}: {exc})")
            return self._error(HTTPStatus.INTERNAL_SERVER_ERROR, msg, head=head)
        return self._json(HTTPStatus.OK, data, head=head)


def make_server(source: str | Path | Sequence[str | Path], host: str = "127.0.0.1", port: int = 8765, *,
                quiet: bool = False) -> ViewerServer:
    """A ready `ViewerServer` (port 0 picks a free port); call ``serve_forever`` on it, ``shutdown`` to stop.

    ``source`` is one root or several (run directories, folders of explanation files, single files); with
    several, file names are prefixed by each root's label (see `dualex.viewer.catalog.Sources`).

    Raises:
        InputError: A root is neither a directory nor an explanation file.
        OSError: The port is taken.
    """
    return ViewerServer(source, host, port, quiet=quiet)


def serve(source: str | Path | Sequence[str | Path], host: str = "127.0.0.1", port: int = 8765, *,
          open_browser: bool = False) -> None:
    """Serve ``source`` (one root or several) until interrupted (Ctrl-C)."""
    server = make_server(source, host, port)
    n = len(server.catalog.groups())
    print(f"dualex viewer: {n} pair(s) under {server.sources.describe()}", file=sys.stderr)
    if host.strip("[]") not in LOOPBACK:
        print(f"dualex viewer: warning: listening on {host}, reachable from other machines", file=sys.stderr)
    print(f"dualex viewer: open {server.url}  (Ctrl-C stops)", file=sys.stderr)
    from dualex.viewer.contrasts import list_contrasts

    if n_contrasts := len(list_contrasts(server.sources)):
        print(f"dualex viewer: {n_contrasts} saved contrast(s): {server.url}contrast.html", file=sys.stderr)
    if open_browser:
        import webbrowser

        webbrowser.open(server.url)
    try:
        server.serve_forever()
    finally:
        server.server_close()
