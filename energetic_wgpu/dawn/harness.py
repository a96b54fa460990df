"""Headless Chromium (Dawn + Tint on SwiftShader) launcher, local HTTP server, result collection.

One :func:`run_job` call = one browser launch: it writes a job folder (``runner.html``,
``runner.js``, ``shaders/*.wgsl`` copied unchanged, ``job.json``), serves it on 127.0.0.1,
starts Chromium in its own process group with WebGPU enabled, waits for the page to POST
its JSON result, and always kills the browser's process group. Errors carry the browser's
stderr tail.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import signal
import socketserver
import subprocess
import tempfile
import threading
import time
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = [
    "DawnError",
    "DawnUnavailable",
    "find_chromium",
    "chromium_flags",
    "run_job",
    "serve_folder",
    "web_dir",
    "copy_shaders",
]

_CANDIDATES = (
    "/usr/lib/chromium/chromium",
    "/usr/lib/chromium-browser/chromium-browser",
    "/opt/google/chrome/chrome",
    "chromium",
    "chromium-browser",
    "google-chrome",
    "google-chrome-stable",
)
#: environment variable naming the Chromium binary to use
ENV_BINARY = "ENERGETIC_CHROMIUM"


class DawnError(RuntimeError):
    """The browser run failed (timeout, page error, crash); the message says why."""


class DawnUnavailable(DawnError):
    """No Chromium binary, or WebGPU is not available in it."""


def find_chromium() -> str | None:
    """Path of a Chromium binary (``$ENERGETIC_CHROMIUM`` first), or None.

    Debian's ``/usr/bin/chromium`` is a wrapper script; the real binary is preferred."""
    env = os.environ.get(ENV_BINARY)
    if env:
        return env if (os.path.isfile(env) and os.access(env, os.X_OK)) else shutil.which(env)
    for c in _CANDIDATES:
        if os.path.isabs(c):
            if os.path.isfile(c) and os.access(c, os.X_OK):
                return c
        else:
            p = shutil.which(c)
            if p:
                return p
    return None


def chromium_flags(user_data_dir: str) -> list[str]:
    return [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu-sandbox",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-quic",
        "--disable-extensions",
        "--disable-dev-shm-usage",
        f"--user-data-dir={user_data_dir}",
        "--enable-unsafe-webgpu",
    ]


def web_dir() -> Path:
    """The folder holding runner.html / runner.js (package data ``energetic_wgpu/web``)."""
    try:
        p = Path(str(resources.files("energetic_wgpu") / "web"))
        if (p / "runner.js").is_file():
            return p
    except Exception:  # pragma: no cover
        pass
    return Path(__file__).resolve().parent.parent / "web"


def copy_shaders(dest: Path) -> list[str]:
    """Copy every .wgsl file, byte for byte, from the package's shader folder to ``dest``."""
    from ..wgsl import shader_names, shader_source

    dest.mkdir(parents=True, exist_ok=True)
    names = list(shader_names())
    for n in names:
        # shader_source reads the file as UTF-8 text; write the same text back (newline="" keeps it unchanged)
        with open(dest / n, "w", encoding="utf-8", newline="") as f:
            f.write(shader_source(n))
    return names


class _Handler(http.server.SimpleHTTPRequestHandler):
    server: "_Server"

    extensions_map = {
        **http.server.SimpleHTTPRequestHandler.extensions_map,
        ".js": "text/javascript",
        ".mjs": "text/javascript",
        ".wgsl": "text/plain",
        ".json": "application/json",
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, directory=self.server_directory, **kwargs)  # type: ignore[attr-defined]

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def do_POST(self) -> None:  # noqa: N802
        n = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(n)
        path = self.path.split("?")[0].rstrip("/").rsplit("/", 1)[-1]
        try:
            payload = json.loads(body.decode("utf-8")) if body else None
        except Exception as exc:
            payload = {"fatal": f"bad JSON posted to {self.path}: {exc}", "raw": body[:2000].decode("utf-8", "replace")}
        self.server.posts.append((path, payload))  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
        if path in self.server.done_paths:  # type: ignore[attr-defined]
            self.server.done.set()  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:  # silence
        pass


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def serve_folder(folder: str | Path, port: int = 0, done_paths: tuple[str, ...] = ("result",)) -> _Server:
    """A threaded HTTP server on 127.0.0.1 serving ``folder``; POSTs are collected in
    ``server.posts`` and a POST to one of ``done_paths`` sets ``server.done``."""
    handler = type("Handler", (_Handler,), {"server_directory": str(folder)})
    srv = _Server(("127.0.0.1", port), handler)
    srv.posts = []  # type: ignore[attr-defined]
    srv.done = threading.Event()  # type: ignore[attr-defined]
    srv.done_paths = set(done_paths)  # type: ignore[attr-defined]
    threading.Thread(target=srv.serve_forever, daemon=True, name="energetic-dawn-http").start()
    return srv


def _kill_group(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=3)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait(timeout=5)


def launch_and_wait(
    folder: Path, page: str, timeout: float = 120.0, binary: str | None = None, done_paths: tuple[str, ...] = ("result",),
    extra_flags: list[str] | None = None,
) -> tuple[Any, str, list[tuple[str, Any]]]:
    """Serve ``folder``, open ``page`` in headless Chromium, wait for a POST to a done path.

    Returns (payload of the done POST, browser stderr, all posts). Raises DawnUnavailable
    (no binary) or DawnError (timeout / browser exit before posting)."""
    binary = binary or find_chromium()
    if binary is None:
        raise DawnUnavailable(
            "Chromium not found (looked for $ENERGETIC_CHROMIUM, " + ", ".join(_CANDIDATES) + "); "
            "install it with `apt-get install -y chromium`"
        )
    srv = serve_folder(folder, done_paths=done_paths)
    port = srv.server_address[1]
    profile = tempfile.mkdtemp(prefix="energetic-chromium-")
    stderr_path = Path(profile + ".stderr")
    env = dict(os.environ)
    env.setdefault("XDG_RUNTIME_DIR", tempfile.gettempdir())
    url = f"http://127.0.0.1:{port}/{page}"
    cmd = [binary, *chromium_flags(profile), *(extra_flags or []), url]
    proc = None
    try:
        with open(stderr_path, "wb") as errf:
            proc = subprocess.Popen(
                cmd, stdout=subprocess.DEVNULL, stderr=errf, stdin=subprocess.DEVNULL, env=env, start_new_session=True
            )
            deadline = time.monotonic() + timeout
            while not srv.done.wait(0.05):  # type: ignore[attr-defined]
                if proc.poll() is not None:
                    raise DawnError(
                        f"Chromium exited with code {proc.returncode} before the page posted its result "
                        f"({url}).\nbrowser stderr:\n{_tail(stderr_path)}"
                    )
                if time.monotonic() > deadline:
                    raise DawnError(
                        f"timed out after {timeout:.0f} s waiting for {url} to post its result "
                        f"(posts so far: {[p for p, _ in srv.posts]}).\nbrowser stderr:\n{_tail(stderr_path)}"  # type: ignore[attr-defined]
                    )
        posts = list(srv.posts)  # type: ignore[attr-defined]
        payload = next(p for path, p in reversed(posts) if path in done_paths)
        return payload, _tail(stderr_path, 20000), posts
    finally:
        if proc is not None:
            _kill_group(proc)
        srv.shutdown()
        srv.server_close()
        shutil.rmtree(profile, ignore_errors=True)
        try:
            stderr_path.unlink()
        except OSError:
            pass


def _tail(path: Path, n: int = 4000) -> str:
    try:
        data = path.read_bytes()
    except OSError:
        return "(no stderr captured)"
    text = data[-n:].decode("utf-8", "replace")
    return text if text.strip() else "(empty)"


def run_job(job: dict[str, Any], timeout: float = 120.0, binary: str | None = None, keep_dir: str | None = None) -> dict[str, Any]:
    """Run one job (plans + compile checks) in one browser launch; returns the page's result.

    The result dict has ``ok``, ``adapter``, ``plans`` (one per plan, with base64 ``reads``,
    ``errors``, ``messages``, ``pipeline_errors``), ``compile`` and ``uncaptured``; plus
    ``browser_stderr`` and ``seconds``.

    Raises:
        DawnUnavailable: no Chromium, or the page found no WebGPU adapter.
        DawnError: timeout, browser crash, or a page exception (with the message).
    """
    t0 = time.monotonic()
    tmp = Path(keep_dir) if keep_dir else Path(tempfile.mkdtemp(prefix="energetic-dawn-"))
    try:
        tmp.mkdir(parents=True, exist_ok=True)
        web = web_dir()
        for f in ("runner.html", "runner.js"):
            shutil.copyfile(web / f, tmp / f)
        copy_shaders(tmp / "shaders")
        job = dict(job)
        job.setdefault("shaders", "shaders/")
        (tmp / "job.json").write_text(json.dumps(job), encoding="utf-8")
        payload, stderr, _ = launch_and_wait(tmp, "runner.html?job=job.json", timeout=timeout, binary=binary)
    finally:
        if not keep_dir:
            shutil.rmtree(tmp, ignore_errors=True)
    if not isinstance(payload, dict):
        raise DawnError(f"the page posted a non-object result: {payload!r:.500}")
    payload["browser_stderr"] = stderr
    payload["seconds"] = time.monotonic() - t0
    fatal = payload.get("fatal")
    if fatal:
        if "navigator.gpu" in fatal or "requestAdapter" in fatal:
            raise DawnUnavailable(f"WebGPU unavailable in Chromium: {fatal}\nbrowser stderr:\n{stderr[-3000:]}")
        raise DawnError(f"the runner page failed: {fatal}\nbrowser stderr:\n{stderr[-3000:]}")
    return payload
