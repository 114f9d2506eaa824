"""Fixtures for the addon's tests that run without Odoo.

- ``addon``: the addon's Odoo-free modules (``client``, ``service_errors``),
  imported as ``mts_connector.<name>`` without running the addon's
  ``__init__.py`` (which imports Odoo).
- ``service``: the real ``mts-connector`` binary, started on port 0 with a
  fresh data directory and a known API key, stopped after the test module.
"""

import importlib
import importlib.machinery
import importlib.util
import os
import re
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

REPO = Path(__file__).resolve().parents[2]
ADDON_DIR = REPO / "odoo_addon" / "mts_connector"
DEFAULT_BIN = REPO / "target" / "debug" / "mts-connector"
LISTENING = re.compile(r"listening on (http://127\.0\.0\.1:\d+)")


def import_pure(name):
    """``mts_connector.<name>`` from the addon folder, its package ``__init__`` not run."""
    if "mts_connector" not in sys.modules:
        spec = importlib.machinery.ModuleSpec("mts_connector", None, is_package=True)
        package = importlib.util.module_from_spec(spec)
        package.__path__ = [str(ADDON_DIR)]
        sys.modules["mts_connector"] = package
    return importlib.import_module(f"mts_connector.{name}")


@pytest.fixture(scope="session")
def addon():
    return SimpleNamespace(
        client=import_pure("client"),
        errors=import_pure("service_errors"),
        import_pure=import_pure,
    )


def _binary():
    path = os.environ.get("MTS_CONNECTOR_BIN")
    if path:
        if not Path(path).is_file():
            pytest.fail(f"MTS_CONNECTOR_BIN={path} does not exist: build it with cargo build --bins")
        return path
    if not DEFAULT_BIN.is_file():
        pytest.skip(f"{DEFAULT_BIN} is not built (cargo build --bins), and MTS_CONNECTOR_BIN is not set")
    return str(DEFAULT_BIN)


class RunningService:
    """A started service: its URL, credentials and what it logged so far."""

    def __init__(self, process, url, api_key, lines):
        self.process = process
        self.url = url
        self.db = "mts_connector"
        self.login = "admin"
        self.api_key = api_key
        self._lines = lines

    @property
    def log(self):
        return "".join(self._lines)


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    api_key = "test-key-" + secrets.token_hex(12)
    data_dir = tmp_path_factory.mktemp("mts-connector-data")
    env = dict(os.environ, MTSC_API_KEY=api_key, RUST_LOG="info", NO_COLOR="1")
    process = subprocess.Popen(
        [_binary(), "serve", "--listen", "127.0.0.1:0", "--data-dir", str(data_dir)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines = []
    found = threading.Event()
    url = []

    def drain():
        # Keep reading so the service never blocks on a full pipe.
        for line in process.stderr:
            lines.append(line)
            match = LISTENING.search(line)
            if match and not found.is_set():
                url.append(match.group(1))
                found.set()
        found.set()

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    deadline = time.monotonic() + 30
    while not found.wait(0.1):
        if time.monotonic() > deadline:
            break
    if not url:
        process.kill()
        process.wait(10)
        pytest.fail("the service did not say where it listens:\n" + "".join(lines))
    running = RunningService(process, url[0], api_key, lines)
    try:
        yield running
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        reader.join(5)
