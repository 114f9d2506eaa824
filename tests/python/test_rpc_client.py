"""The service as an Odoo RPC client library (odoorpc / OdooRPC) drives it.

Standard library only. Each test starts the real binary on port 0 with a fresh data
dir: the path comes from MTS_CONNECTOR_BIN, else target/debug/mts-connector under the
repository root (build it first with `cargo build --bins`).

    python3 -m pytest tests/python/test_rpc_client.py -q
"""

import http.cookiejar
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.request

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BINARY = os.environ.get("MTS_CONNECTOR_BIN") or os.path.join(REPO_ROOT, "target", "debug", "mts-connector")

DB = "mts_connector"
LOGIN = "admin"
API_KEY = "py-apikey-SECRET0"
ODK_PASSWORD = "odk-pw-SECRET1"
CALLBACK_PASSWORD = "cb-pw-SECRET2"
# A local port nothing listens on: started connectors fail fast instead of reaching out.
CLOSED_URL = "http://127.0.0.1:9"
DEADLINE = 20.0


def valid_connector(**overrides):
    vals = {
        "name": "Registration ODK",
        "mts_url": CLOSED_URL,
        "input_type": "odk",
        "is_recurring": "recurring",
        "interval_minutes": 60,
        "odk_base_url": CLOSED_URL,
        "odk_odata_url": CLOSED_URL + "/v1/projects/1/forms/reg.svc/Submissions",
        "odk_email": "odk-user@example.org",
        "odk_password": ODK_PASSWORD,
        "callback_url": "https://registry.example.org/api/v1/registry/callback",
        "callback_authtype": "odoo",
        "callback_auth_url": "https://registry.example.org/web/session/authenticate",
        "callback_auth_database": "registry",
        "callback_auth_username": "callback-user",
        "callback_auth_password": CALLBACK_PASSWORD,
    }
    vals.update(overrides)
    return vals


class RpcError(Exception):
    """A JSON-RPC error answer, as odoorpc raises it."""

    def __init__(self, error):
        super().__init__(error.get("data", {}).get("message") or error.get("message"))
        self.error = error
        self.code = error.get("code")
        self.name = error.get("data", {}).get("name")


class Service:
    """One `mts-connector serve` child process; its stderr is read by a thread."""

    def __init__(self):
        if not os.path.exists(BINARY):
            raise RuntimeError(
                "mts-connector binary not found at %s: run `cargo build --bins` or set MTS_CONNECTOR_BIN" % BINARY
            )
        self.tmp = tempfile.mkdtemp(prefix="mtsc-py-")
        env = {k: v for k, v in os.environ.items() if not k.startswith("MTSC_") and k != "RUST_LOG"}
        env.update({"MTSC_API_KEY": API_KEY, "RUST_LOG": "info"})
        self.proc = subprocess.Popen(
            [BINARY, "serve", "--listen", "127.0.0.1:0", "--data-dir", os.path.join(self.tmp, "data")],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
        )
        self._log = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()
        self.url = self._wait_listening()

    def _read_stderr(self):
        for line in iter(self.proc.stderr.readline, b""):
            with self._lock:
                self._log.append(line.decode("utf-8", "replace"))

    def log(self):
        with self._lock:
            return "".join(self._log)

    def _wait_listening(self):
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            m = re.search(r"listening on (http://[0-9.]+:[0-9]+)", self.log())
            if m:
                return m.group(1)
            if self.proc.poll() is not None:
                raise RuntimeError("the service exited with %s:\n%s" % (self.proc.returncode, self.log()))
            time.sleep(0.02)
        raise RuntimeError("the service did not listen within %ss:\n%s" % (DEADLINE, self.log()))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=DEADLINE)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(timeout=5)
        self.proc.stderr.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


class Client:
    """The JSON-RPC transport an Odoo RPC library uses: one opener with a cookie jar."""

    def __init__(self, url):
        self.url = url
        self.cookies = http.cookiejar.CookieJar()
        # No proxy from the environment: the service is on localhost.
        self.opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPCookieProcessor(self.cookies)
        )
        self._id = 0

    def raw(self, path, params):
        self._id += 1
        body = json.dumps({"jsonrpc": "2.0", "method": "call", "params": params, "id": self._id}).encode()
        req = urllib.request.Request(
            self.url + path, data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        with self.opener.open(req, timeout=30) as resp:
            answer = json.loads(resp.read().decode())
            answer["_headers"] = resp.headers
        assert answer["jsonrpc"] == "2.0" and answer["id"] == self._id, answer
        return answer

    def json(self, path, params):
        answer = self.raw(path, params)
        if "error" in answer:
            raise RpcError(answer["error"])
        return answer["result"]

    def call_kw(self, model, method, args, kwargs=None):
        params = {"model": model, "method": method, "args": args, "kwargs": kwargs or {}}
        return self.json("/web/dataset/call_kw/%s/%s" % (model, method), params)

    def session_cookie(self):
        return next((c for c in self.cookies if c.name == "session_id"), None)


class OdooRpcSessionFlow(unittest.TestCase):
    """What odoorpc.ODOO(host, port=...).login(db, user, password) and env[model] do."""

    def setUp(self):
        self.service = Service()
        self.addCleanup(self.service.stop)
        self.client = Client(self.service.url)

    def test_version_login_model_lookup_crud_logout(self):
        c = self.client
        version = c.json("/web/webclient/version_info", {})
        self.assertEqual(version["server_version"], "17.0")
        self.assertEqual(version["protocol_version"], 1)
        self.assertEqual(version["server_version_info"][0], 17)

        info = c.json("/web/session/authenticate", {"db": DB, "login": LOGIN, "password": API_KEY})
        self.assertEqual(info["uid"], 2)
        self.assertEqual(info["db"], DB)
        self.assertEqual(info["user_context"]["uid"], 2)
        cookie = c.session_cookie()
        self.assertIsNotNone(cookie, "authenticate sets the session_id cookie")
        self.assertEqual(cookie.path, "/")
        self.assertTrue(cookie.has_nonstandard_attr("HttpOnly"))

        # odoorpc's env["mts.connector"] first checks the model exists.
        found = c.call_kw("ir.model", "search", [[["model", "=", "mts.connector"]]])
        self.assertTrue(found, "ir.model lists mts.connector")

        fields = c.call_kw("mts.connector", "fields_get", [], {"attributes": ["type", "string", "required", "selection"]})
        self.assertEqual(fields["name"]["type"], "char")
        self.assertTrue(fields["name"]["required"])
        self.assertEqual(fields["input_type"]["selection"], [["odk", "ODK"], ["custom", "OpenG2P Registry"]])
        self.assertEqual(fields["interval_minutes"]["type"], "integer")

        new_id = c.call_kw("mts.connector", "create", [valid_connector()])
        self.assertEqual(new_id, 1)
        rows = c.call_kw(
            "mts.connector", "search_read", [[["name", "ilike", "registration"]]], {"fields": ["name", "odk_password"]}
        )
        self.assertEqual(rows, [{"id": 1, "name": "Registration ODK", "odk_password": "********"}])

        self.assertIs(c.call_kw("mts.connector", "write", [[new_id], {"name": "Renamed", "interval_minutes": 30}]), True)
        rec = c.call_kw("mts.connector", "read", [[new_id]], {"fields": ["name", "interval_minutes", "job_status"]})
        self.assertEqual(rec, [{"id": 1, "name": "Renamed", "interval_minutes": 30, "job_status": "draft"}])

        with self.assertRaises(RpcError) as bad:
            c.call_kw("mts.connector", "write", [[new_id], {"mapping": "not json"}])
        self.assertEqual(bad.exception.name, "odoo.exceptions.ValidationError")
        self.assertIn("mapping", str(bad.exception))

        self.assertIs(c.call_kw("mts.connector", "unlink", [[new_id]]), True)
        self.assertEqual(c.call_kw("mts.connector", "search_count", [[]]), 0)

        self.assertIsNone(c.json("/web/session/destroy", {}))
        with self.assertRaises(RpcError) as expired:
            c.call_kw("mts.connector", "search", [[]])
        self.assertEqual(expired.exception.code, 100)
        self.assertEqual(expired.exception.name, "odoo.http.SessionExpiredException")

    def test_wrong_password_gets_no_session(self):
        with self.assertRaises(RpcError) as denied:
            self.client.json("/web/session/authenticate", {"db": DB, "login": LOGIN, "password": "wrong"})
        self.assertEqual(denied.exception.name, "odoo.exceptions.AccessDenied")
        self.assertIsNone(self.client.session_cookie())
        with self.assertRaises(RpcError) as expired:
            self.client.call_kw("mts.connector", "search", [[]])
        self.assertEqual(expired.exception.code, 100)


class ExternalJsonRpc(unittest.TestCase):
    """The stateless /jsonrpc path (odoorpc's protocol="jsonrpc" for common/object)."""

    def setUp(self):
        self.service = Service()
        self.addCleanup(self.service.stop)
        self.client = Client(self.service.url)

    def rpc(self, service, method, *args):
        return self.client.json("/jsonrpc", {"service": service, "method": method, "args": list(args)})

    def execute_kw(self, model, method, args, kwargs=None, password=API_KEY):
        return self.rpc("object", "execute_kw", DB, 2, password, model, method, args, kwargs or {})

    def test_login_and_execute_kw(self):
        self.assertEqual(self.rpc("common", "version")["server_version"], "17.0")
        self.assertEqual(self.rpc("common", "login", DB, LOGIN, API_KEY), 2)
        self.assertIs(self.rpc("common", "login", DB, LOGIN, "wrong"), False)

        ids = self.execute_kw("mts.connector", "create", [[valid_connector(name="A"), valid_connector(name="B")]])
        self.assertEqual(ids, [1, 2])
        rows = self.execute_kw("mts.connector", "search_read", [[]], {"fields": ["name"], "order": "name desc"})
        self.assertEqual(rows, [{"id": 2, "name": "B"}, {"id": 1, "name": "A"}])
        self.assertIs(self.execute_kw("mts.connector", "write", [[1], {"lang_code": "fra"}]), True)
        self.assertEqual(self.execute_kw("mts.connector", "search", [[["lang_code", "=", "fra"]]]), [1])
        self.assertIs(self.execute_kw("mts.connector", "action_start", [[1]]), True)
        with self.assertRaises(RpcError) as running:
            self.execute_kw("mts.connector", "unlink", [[1]])
        self.assertEqual(running.exception.name, "odoo.exceptions.UserError")
        self.assertIs(self.execute_kw("mts.connector", "unlink", [[2]]), True)
        self.assertEqual(self.execute_kw("mts.connector", "search_count", [[]]), 1)

        with self.assertRaises(RpcError) as denied:
            self.execute_kw("mts.connector", "search", [[]], password="wrong")
        self.assertEqual(denied.exception.name, "odoo.exceptions.AccessDenied")

    def test_no_answer_and_no_log_line_holds_a_secret(self):
        self.execute_kw("mts.connector", "create", [valid_connector()])
        answers = json.dumps(
            [
                self.execute_kw("mts.connector", "read", [[1]]),
                self.execute_kw("mts.connector", "copy", [1]),
                self.execute_kw("mts.connector", "preview_mts_request", [[1]]),
            ]
        )
        self.service.stop()
        for secret in (API_KEY, ODK_PASSWORD, CALLBACK_PASSWORD):
            self.assertNotIn(secret, answers)
            self.assertNotIn(secret, self.service.log())
        self.assertIn("stopped; store flushed", self.service.log())


if __name__ == "__main__":
    unittest.main()
