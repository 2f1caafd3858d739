"""For the web page tests: the app on a real HTTP server thread, headless
Chromium loading a page from it, and a small reader of the DOM it dumps."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import threading
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest
from flask import Flask
from werkzeug.serving import make_server

# Without the background-networking flags Chromium waits on services it
# cannot reach on a closed network; --no-sandbox because tests run as root.
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage",
)
# Generous: the bound is there so a wedged browser fails the test instead of hanging it.
CHROMIUM_TIMEOUT_S = 120
VOID_TAGS = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
                       "track", "wbr"})


@contextlib.contextmanager
def serving(app: Flask) -> Iterator[str]:
    """``app`` on a free loopback port; yields its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(5)


def chromium_binary() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    pytest.fail("chromium not found: the browser tests need Debian's chromium package "
                "(bash scripts/bootstrap.sh --tests installs it; or apt-get install chromium)", pytrace=False)


def dump_dom(url: str, profile_dir: Path, virtual_time_ms: int | None = None) -> str:
    """The page's DOM after it loaded and its scripts ran, as Chromium
    serialises it. ``virtual_time_ms``: let timers and fetches run for that
    much virtual time first (for pages that render asynchronously)."""
    cmd = [chromium_binary(), *CHROMIUM_FLAGS, f"--user-data-dir={profile_dir}"]
    if virtual_time_ms is not None:
        cmd.append(f"--virtual-time-budget={virtual_time_ms}")
    cmd += ["--dump-dom", url]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=CHROMIUM_TIMEOUT_S)
    assert proc.returncode == 0, f"chromium exited {proc.returncode}: {proc.stderr[-2000:]}"
    assert "<html" in proc.stdout, f"chromium printed no DOM: {proc.stderr[-2000:]}"
    return proc.stdout


class PageReader(HTMLParser):
    """Elements by id (their text), table rows carrying ``data-dest`` (their
    attributes and cell texts), and every tag name seen."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.text_by_id: dict[str, str] = {}
        self.attrs_by_id: dict[str, dict[str, str]] = {}
        self.rows: list[dict[str, object]] = []
        self.tags: list[tuple[str, dict[str, str]]] = []
        self._open: list[tuple[str, str | None]] = []  # open elements: (tag, id)
        self._row: dict[str, object] | None = None
        self._cell: list[str] | None = None
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.tags.append((tag, a))
        if "id" in a:
            self.text_by_id.setdefault(a["id"], "")
            self.attrs_by_id[a["id"]] = a
        if tag not in VOID_TAGS:
            self._open.append((tag, a.get("id")))
        if tag == "tr" and "data-dest" in a:
            self._row = {"id": a["data-dest"], "state": a.get("data-state"), "cells": []}
            self.rows.append(self._row)
        elif tag == "td" and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if any(t == tag for t, _ in self._open):
            while self._open and self._open.pop()[0] != tag:
                pass
        if tag == "td" and self._row is not None and self._cell is not None:
            cells = self._row["cells"]
            assert isinstance(cells, list)
            cells.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr":
            self._row = None

    def handle_data(self, data: str) -> None:
        for _, element_id in self._open:
            if element_id is not None:
                self.text_by_id[element_id] += data
        if self._cell is not None:
            self._cell.append(data)

    def text(self, element_id: str) -> str:
        return " ".join(self.text_by_id[element_id].split())
