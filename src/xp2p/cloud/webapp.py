"""The web app and the JavaScript SDK, served by the cloud as static files (issue 11 item 4).

Routes (GET and HEAD)::

    /app                 308 to /app/ (the page's relative URLs need the slash)
    /app/                web/app/index.html
    /app/<file>          a file of web/app/
    /sdk/<file>.js       an ES module of web/src/
    /sdk/mpegts.js       web/node_modules/mpegts.js/dist/mpegts.js (``npm ci`` in web/)

A name is served only when it is in a listing of that folder made for the request: the
request's path is looked up as a string, never joined onto a folder, so ``..``, an encoded
``%2e%2e%2f``, an absolute path or a symlink out of the folder cannot name anything else.
The listing leaves out dot-files and dot-folders, symlinks, and types without a known content
type; there is no directory listing. Anything else is 404 with the cloud's JSON error.

Same origin as the API, so the page needs no CORS, and a strict Content-Security-Policy
(`CONTENT_SECURITY_POLICY`) goes on every file: no inline script or style, no other origin
(the page's WebRTC is not governed by CSP; its fetches go to this cloud only), blob: for the
media element (MSE) and workers. ``Cache-Control: no-cache`` with an ETag: a browser always
revalidates, so a changed checkout shows at the next reload, and an unchanged file costs a 304.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from xp2p.web_assets import APP_SRC, MPEGTS_JS, SDK_SRC

#: What each served type is sent as; a file of any other type is not listed.
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".webmanifest": "application/manifest+json",
    ".woff2": "font/woff2",
    ".txt": "text/plain; charset=utf-8",
}
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "media-src 'self' blob:; connect-src 'self'; worker-src 'self' blob:; object-src 'none'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
#: Bounds on one listing (a folder is the checkout's, but a walk must end).
MAX_DEPTH = 4
MAX_FILES = 1000
#: Larger files are not served (mpegts.js is about 0.4 MiB).
MAX_FILE_SIZE = 8 * 1024 * 1024
_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}
#: The page may use the microphone (talk-back) and nothing else of the kind.
_PERMISSIONS_POLICY = "camera=(), geolocation=(), microphone=(self), payment=(), usb=()"


def listing(root: Path, suffixes: frozenset[str] | None = None) -> dict[str, Path]:
    """Relative POSIX name -> path of every regular file under ``root`` (no dot-names, no
    symlinks, known content types only, ``suffixes`` only when given), at most
    ``MAX_DEPTH`` folders deep and ``MAX_FILES`` files. Missing root: empty."""
    found: dict[str, Path] = {}

    def walk(folder: Path, prefix: str, depth: int) -> None:
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            return
        for entry in entries:
            if len(found) >= MAX_FILES:
                return
            if entry.name.startswith(".") or entry.is_symlink():
                continue
            name = f"{prefix}{entry.name}"
            if entry.is_dir(follow_symlinks=False):
                if depth < MAX_DEPTH:
                    walk(Path(entry.path), f"{name}/", depth + 1)
            elif entry.is_file(follow_symlinks=False):
                suffix = Path(entry.name).suffix.lower()
                if suffix in CONTENT_TYPES and (suffixes is None or suffix in suffixes):
                    found[name] = Path(entry.path)

    walk(root, "", 1)
    return found


@dataclass(frozen=True)
class _Cached:
    mtime_ns: int
    size: int
    body: bytes
    etag: str


class WebApp:
    """The static routes over one ``web_dir`` (the checkout's ``web/`` by default)."""

    def __init__(self, web_dir: Path) -> None:
        self.web_dir = web_dir
        #: file contents by path, kept while the file's mtime and size stay (bounded by the
        #: listings, which are bounded by MAX_FILES)
        self._cache: dict[Path, _Cached] = {}

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/app", self._app_redirect)
        app.router.add_get("/app/", self._app_index)
        app.router.add_get("/app/{name:.+}", self._app_file)
        app.router.add_get("/sdk/{name:.+}", self._sdk_file)

    def available(self) -> bool:
        """Whether the page is there (web/app/index.html)."""
        return "index.html" in listing(self.web_dir / APP_SRC)

    def sdk_complete(self) -> bool:
        """Whether mpegts.js is installed (``npm ci`` in web/): the page plays nothing without."""
        return (self.web_dir / MPEGTS_JS).is_file()

    # --- handlers -------------------------------------------------------------------------

    async def _app_redirect(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPPermanentRedirect("/app/")

    async def _app_index(self, request: web.Request) -> web.StreamResponse:
        return await self._app_named(request, "index.html")

    async def _app_file(self, request: web.Request) -> web.StreamResponse:
        return await self._app_named(request, request.match_info["name"])

    async def _app_named(self, request: web.Request, name: str) -> web.StreamResponse:
        path = listing(self.web_dir / APP_SRC).get(name)
        if path is None:
            if name == "index.html":
                return not_found(
                    f"the web app is not here: no {APP_SRC}/index.html in {self.web_dir}"
                )
            return not_found("no such file in the web app")
        return self._serve(request, path)

    async def _sdk_file(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name == MPEGTS_JS.name:
            path = self.web_dir / MPEGTS_JS
            if not path.is_file() or path.is_symlink():
                return not_found(
                    "mpegts.js is not installed: run `npm ci` in web/ (scripts/setup.sh does)"
                )
            return self._serve(request, path)
        found = listing(self.web_dir / SDK_SRC, frozenset({".js", ".mjs"})).get(name)
        if found is None:
            return not_found("no such module in the SDK")
        return self._serve(request, found)

    def _serve(self, request: web.Request, path: Path) -> web.StreamResponse:
        cached = self._read(path)
        if cached is None:
            return not_found("no such file")
        headers = {**_SECURITY_HEADERS, "ETag": cached.etag}
        content_type = CONTENT_TYPES[path.suffix.lower()]
        if content_type.startswith("text/html"):
            headers["Permissions-Policy"] = _PERMISSIONS_POLICY
        if cached.etag in _etags(request.headers.get("If-None-Match", "")):
            return web.Response(status=304, headers=headers)
        headers["Content-Type"] = content_type
        return web.Response(body=cached.body, headers=headers)

    def _read(self, path: Path) -> _Cached | None:
        # Small files on a local disk: read in the loop, and only when they changed.
        try:
            stat = path.stat()
            cached = self._cache.get(path)
            if cached is not None and (cached.mtime_ns, cached.size) == (
                stat.st_mtime_ns,
                stat.st_size,
            ):
                return cached
            if stat.st_size > MAX_FILE_SIZE:
                return None
            body = path.read_bytes()
        except OSError:
            return None
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        cached = _Cached(stat.st_mtime_ns, stat.st_size, body, etag)
        if len(self._cache) >= MAX_FILES:
            self._cache.clear()
        self._cache[path] = cached
        return cached


def _etags(header: str) -> set[str]:
    return {tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip()}


def not_found(message: str) -> web.Response:
    """The cloud's JSON error (``xp2p.cloud.app.error_response``'s shape), 404."""
    body = {"error": {"code": "not_found", "message": message}}
    return web.json_response(body, status=404, headers={"X-Content-Type-Options": "nosniff"})
