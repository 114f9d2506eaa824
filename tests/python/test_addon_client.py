"""The addon's client module against the real service binary (no Odoo needed).

Each service error must come out as the client class that stands for the Odoo
exception the addon raises (ValidationError, UserError, AccessDenied,
MissingError); a refused connection or a silent server as "unreachable at
<url>"; and no secret may appear in an exception or a log line.
"""

import ast
import http.server
import logging
import socket
import sys
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

import connectors

ODK_PASSWORD = "odk-pw-" + "7f3a9c"
MODELS_DIR = Path(__file__).resolve().parents[2] / "odoo_addon" / "mts_connector" / "models"


def odk_connector(**values):
    return connectors.odk_connector(ODK_PASSWORD, **values)


@pytest.fixture
def client(addon, service):
    addon.client.forget_logins()
    return addon.client.ServiceClient(service.url, service.db, service.login, service.api_key, timeout=10)


@pytest.fixture
def connector_id(client):
    return client.execute_kw("mts.connector", "create", [odk_connector()])


def utc(delta):
    return (datetime.now(timezone.utc) + delta).strftime("%Y-%m-%d %H:%M:%S")


# -- calls that work -------------------------------------------------------------------------


def test_version_and_login(client):
    assert client.version()["server_serie"] == "17.0"
    assert isinstance(client.authenticate(), int)


def test_create_read_write(client, connector_id):
    (row,) = client.execute_kw(
        "mts.connector", "read", [[connector_id], ["name", "job_status", "odk_password", "lang_code"]]
    )
    assert row["name"] == "ODK survey"
    assert row["job_status"] == "draft"
    assert row["lang_code"] == "eng"
    assert row["odk_password"] != ODK_PASSWORD  # write-only: answered masked
    assert client.execute_kw("mts.connector", "write", [[connector_id], {"interval_minutes": 15}]) is True
    (row,) = client.execute_kw("mts.connector", "read", [[connector_id], ["interval_minutes"]])
    assert row["interval_minutes"] == 15


def test_a_batch_is_one_call(client):
    ids = client.execute_kw("mts.connector", "create", [[odk_connector(name="a"), odk_connector(name="b")]])
    assert len(ids) == 2
    rows = client.execute_kw("mts.connector", "search_read", [[["id", "in", ids]]], {"fields": ["name"]})
    assert sorted(row["name"] for row in rows) == ["a", "b"]
    assert client.execute_kw("mts.connector", "action_start", [ids]) is True
    rows = client.execute_kw("mts.connector", "read", [ids, ["job_status"]])
    assert {row["job_status"] for row in rows} == {"running"}
    assert client.execute_kw("mts.connector", "action_stop", [ids]) is True


def test_copy_and_unlink(client, connector_id):
    copy_id = client.execute_kw("mts.connector", "copy", [connector_id], {"default": {"name": "copied"}})
    (row,) = client.execute_kw("mts.connector", "read", [[copy_id], ["name", "odk_password", "create_date"]])
    assert row["name"] == "copied"
    assert row["odk_password"]  # set (masked) on the copy too
    assert row["create_date"]
    assert client.execute_kw("mts.connector", "unlink", [[copy_id]]) is True
    assert client.execute_kw("mts.connector", "search", [[["id", "=", copy_id]]]) == []


def test_the_defaults_the_addon_relies_on(client):
    defaults = client.execute_kw("mts.connector", "default_get", [["vid_id_type", "uin_token_id_type"]])
    assert defaults == {"vid_id_type": "MOSIP VID", "uin_token_id_type": "MOSIP UIN TOKEN"}


def test_preview_masks_secrets(client, connector_id):
    preview = client.execute_kw("mts.connector", "preview_mts_request", [[connector_id]])
    assert ODK_PASSWORD not in repr(preview)
    assert preview["request"]["odkconfig"]["password"] == "********"


# -- errors, each as the class that maps onto the Odoo exception -------------------------------


@pytest.mark.parametrize(
    ("call", "class_name", "odoo_exception", "message"),
    [
        (
            lambda c, i: c.execute_kw("mts.connector", "write", [[i], {"mapping": "not json"}]),
            "ServiceValidationError",
            "ValidationError",
            "Mapping (mapping)",
        ),
        (
            lambda c, i: c.execute_kw("mts.connector", "create", [{"name": "incomplete"}]),
            "ServiceValidationError",
            "ValidationError",
            "Missing required fields",
        ),
        (
            lambda c, i: c.execute_kw("mts.connector", "action_stop", [[i]]),
            "ServiceUserError",
            "UserError",
            "only a started or running connector can be stopped",
        ),
        (
            lambda c, i: c.execute_kw("mts.connector", "read", [[i + 100000], ["name"]]),
            "ServiceMissingError",
            "MissingError",
            "Record does not exist",
        ),
    ],
    ids=["validation", "required", "user", "missing"],
)
def test_service_errors_map_to_their_classes(addon, client, connector_id, call, class_name, odoo_exception, message):
    with pytest.raises(addon.errors.ServiceError) as raised:
        call(client, connector_id)
    err = raised.value
    assert type(err).__name__ == class_name
    assert err.odoo_exception == odoo_exception
    assert message in str(err)
    assert err.remote_name == f"odoo.exceptions.{odoo_exception}"


def test_a_running_connector_cannot_be_deleted(addon, client, connector_id):
    client.execute_kw("mts.connector", "action_start", [[connector_id]])
    with pytest.raises(addon.errors.ServiceUserError, match="stop it before deleting it"):
        client.execute_kw("mts.connector", "unlink", [[connector_id]])
    client.execute_kw("mts.connector", "action_stop", [[connector_id]])
    assert client.execute_kw("mts.connector", "unlink", [[connector_id]]) is True


@pytest.mark.parametrize("which", ["api_key", "db", "login"])
def test_wrong_credentials_are_access_denied(addon, service, which):
    creds = {"db": service.db, "login": service.login, "api_key": service.api_key}
    creds[which] = "wrong-" + which
    client = addon.client.ServiceClient(service.url, creds["db"], creds["login"], creds["api_key"])
    with pytest.raises(addon.errors.ServiceAccessDenied) as raised:
        client.execute_kw("mts.connector", "search", [[]])
    assert raised.value.odoo_exception == "AccessDenied"
    assert "refused the database, login or API key" in str(raised.value)


def test_an_unknown_method_is_a_user_error_with_the_services_message(addon, client):
    with pytest.raises(addon.errors.ServiceError) as raised:
        client.execute_kw("mts.connector", "action_no_such_thing", [[1]])
    err = raised.value
    assert type(err) is addon.errors.ServiceError
    assert err.odoo_exception == "UserError"
    assert err.remote_name == "builtins.AttributeError"
    assert "action_no_such_thing" in str(err)


@pytest.mark.parametrize(
    ("method", "args"),
    [
        ("action_run_now", lambda i: [[i]]),
        ("action_import", lambda i: [[i], utc(timedelta(days=-2)), utc(timedelta(days=-1))]),
        ("action_test_connection", lambda i: [[i]]),
        ("action_retry_failed", lambda i: [[i]]),
    ],
)
def test_the_actions_the_addon_calls(addon, client, connector_id, method, args):
    """Each answers, or (not landed in this service build yet) is an AttributeError
    that the addon shows as a UserError with the service's message."""
    try:
        result = client.execute_kw("mts.connector", method, args(connector_id))
    except addon.errors.ServiceError as err:
        assert type(err) is addon.errors.ServiceError, err
        assert err.remote_name == "builtins.AttributeError", err
        assert method in str(err)
        return
    if method == "action_test_connection":
        assert isinstance(result, str) and result
        assert ODK_PASSWORD not in result


@pytest.mark.parametrize(
    ("model", "fields"),
    [
        (
            "mts.connector.run",
            ["name", "connector_id", "window_start", "window_end", "state", "mts_status", "records_failed"],
        ),
        ("mts.connector.delivery", ["connector_id", "run_id", "key", "state", "last_status", "last_error"]),
    ],
)
def test_runs_and_deliveries_are_readable(client, connector_id, model, fields):
    rows = client.execute_kw(
        model, "search_read", [[["connector_id", "in", [connector_id]]]], {"fields": fields, "order": "id desc"}
    )
    assert isinstance(rows, list)
    for row in rows:
        assert set(fields) <= set(row)


def test_read_only_models_refuse_writes(addon, client):
    with pytest.raises(addon.errors.ServiceAccessError):
        client.execute_kw("mts.connector.run", "create", [{"name": "x"}])


def test_a_too_big_request_gets_the_services_message(addon, client):
    """The service answers HTTP 413 with a JSON-RPC error: its message, not "HTTP 413"."""
    with pytest.raises(addon.errors.ServiceError) as raised:
        client.execute_kw("mts.connector", "search", [[["name", "=", "x" * 1_100_000]]])
    assert not isinstance(raised.value, addon.errors.ServiceProtocolError)
    assert raised.value.odoo_exception == "UserError"
    assert str(raised.value)


# -- an unreachable or wrong service ------------------------------------------------------------


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("url", ["http://127.0.0.1:notaport", "ftp://127.0.0.1", "", "http://"])
def test_a_malformed_url_is_a_configuration_error(addon, url):
    with pytest.raises(addon.errors.ServiceNotConfigured) as raised:
        addon.client.ServiceClient(url, "db", "admin", "k")
    assert raised.value.odoo_exception == "UserError"


def test_a_refused_connection_is_unreachable(addon):
    port = _free_port()
    client = addon.client.ServiceClient(f"http://127.0.0.1:{port}", "db", "admin", "k", timeout=5)
    with pytest.raises(addon.errors.ServiceUnreachable) as raised:
        client.execute_kw("mts.connector", "search", [[]])
    assert raised.value.odoo_exception == "UserError"
    assert f"unreachable at http://127.0.0.1:{port}" in str(raised.value)


def test_a_silent_server_times_out_as_unreachable(addon):
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(5)  # accepts connections in the backlog, never answers
        port = silent.getsockname()[1]
        client = addon.client.ServiceClient(f"http://127.0.0.1:{port}", "db", "admin", "k", timeout=0.5)
        with pytest.raises(addon.errors.ServiceUnreachable, match=r"no answer within 0\.5 s"):
            client.version()


class _NotJsonRpc(http.server.BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 (http.server's name)
        body = b"<html>not here</html>"
        self.send_response(404 if self.path == "/jsonrpc" else 200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_a_wrong_url_is_a_protocol_error(addon):
    server = http.server.HTTPServer(("127.0.0.1", 0), _NotJsonRpc)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        client = addon.client.ServiceClient(url, "db", "admin", "k", timeout=5)
        with pytest.raises(addon.errors.ServiceProtocolError, match="answered HTTP 404"):
            client.version()
    finally:
        server.shutdown()
        server.server_close()


# -- secrets ----------------------------------------------------------------------------------------


def test_no_secret_in_exceptions_or_logs(addon, service, caplog):
    caplog.set_level(logging.DEBUG)
    port = _free_port()
    key = service.api_key
    seen = []
    clients = [
        addon.client.ServiceClient(service.url, service.db, service.login, key),
        addon.client.ServiceClient(service.url, service.db, service.login, key + "-wrong"),
        addon.client.ServiceClient(f"http://admin:{key}@127.0.0.1:{port}", service.db, service.login, key),
    ]
    calls = [
        ("mts.connector", "create", [odk_connector(mapping="{")]),
        ("mts.connector", "create", [odk_connector(name="kept")]),
        ("mts.connector", "read", [[999999], ["name"]]),
        ("mts.connector", "no_such_method", [[1]]),
    ]
    for client in clients:
        seen.append(repr(client))
        for model, method, args in calls:
            try:
                seen.append(repr(client.execute_kw(model, method, args)))
            except addon.errors.ServiceError as err:
                seen += [str(err), repr(err), repr(err.args), err.message]
    text = "\n".join(seen) + "\n" + caplog.text
    assert "unreachable at http://127.0.0.1:" in text  # the third client did fail
    assert "Mapping (mapping)" in text
    for secret in (key, ODK_PASSWORD):
        assert secret not in text
    assert f"admin:{key}" not in text


def test_the_service_logs_no_secret(service, client):
    client.execute_kw("mts.connector", "create", [odk_connector(name="logged")])
    assert service.log  # it did log
    assert service.api_key not in service.log
    assert ODK_PASSWORD not in service.log


# -- the Odoo model mirrors the service's ------------------------------------------------------


def _odoo_fields():
    """Field name -> (type, label, selection, default, required) from the addon's model, by AST."""
    tree = ast.parse((MODELS_DIR / "mts_connector.py").read_text())
    constants = {}
    for node in ast.parse((MODELS_DIR / "connector_spec.py").read_text()).body + tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                constants[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass

    def value(node):
        if isinstance(node, ast.Name):
            return constants[node.id]
        return ast.literal_eval(node)

    (cls,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "MtsConnector"]
    out = {}
    for node in cls.body:
        if not (isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)):
            continue
        func = node.value.func
        if not (isinstance(func, ast.Attribute) and getattr(func.value, "id", None) == "fields"):
            continue
        name = node.targets[0].id
        kwargs = {kw.arg: kw.value for kw in node.value.keywords}
        args = node.value.args
        selection = value(args[0]) if func.attr == "Selection" else None
        label = value(kwargs["string"]) if "string" in kwargs else None
        if label is None:
            base = name[:-3] if name.endswith("_id") else name
            label = base.replace("_", " ").title()
        default = kwargs.get("default")
        if default is not None and not isinstance(default, ast.Lambda):
            default = value(default)
        elif isinstance(default, ast.Lambda):
            default = "<dynamic>"
        required = "required" in kwargs and value(kwargs["required"]) is True
        out[name] = (func.attr.lower(), label, selection, default, required)
    return out


def test_the_odoo_model_has_the_services_fields(client):
    service_fields = client.execute_kw(
        "mts.connector", "fields_get", [], {"attributes": ["type", "string", "selection", "required", "readonly"]}
    )
    defaults = client.execute_kw("mts.connector", "default_get", [list(service_fields)])
    odoo = _odoo_fields()
    # Kept by Odoo itself (magic fields) or shown through computed last-run fields.
    not_mirrored = {"id", "display_name", "create_date", "write_date", "last_run_id"}
    problems = []
    for name, desc in service_fields.items():
        if name in not_mirrored:
            continue
        if name not in odoo:
            problems.append(f"{name}: missing in Odoo")
            continue
        ftype, label, selection, default, required = odoo[name]
        if ftype != desc["type"]:
            problems.append(f"{name}: type {ftype} != {desc['type']}")
        if label != desc["string"]:
            problems.append(f"{name}: label {label!r} != {desc['string']!r}")
        if desc.get("selection") and [list(s) for s in selection] != desc["selection"]:
            problems.append(f"{name}: selection {selection} != {desc['selection']}")
        if desc["readonly"]:
            continue  # computed from the service in Odoo: no default, never required
        if default != "<dynamic>" and default != defaults.get(name):
            problems.append(f"{name}: default {default!r} != {defaults.get(name)!r}")
        if default == "<dynamic>" and name not in defaults:
            problems.append(f"{name}: dynamic default in Odoo, none in the service")
        if required != desc["required"]:
            problems.append(f"{name}: required {required} != {desc['required']}")
    assert not problems, "\n".join(problems)


def test_odoo_forwards_every_writable_field_and_hides_the_secret_ones(client):
    spec = _load_spec()
    service_fields = client.execute_kw(
        "mts.connector", "fields_get", [], {"attributes": ["readonly", "password"]}
    )
    writable = {name for name, desc in service_fields.items() if not desc["readonly"]}
    secret = {name for name, desc in service_fields.items() if desc.get("password")}
    assert set(spec.SERVICE_FIELDS) == writable
    # The extra callback headers are a secret on both sides (they may hold credentials).
    assert "callback_extra_headers" in secret
    assert set(spec.SECRET_FIELDS) == secret


def _load_spec():
    import importlib.util

    spec = importlib.util.spec_from_file_location("connector_spec", MODELS_DIR / "connector_spec.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_values_are_compared_and_sent_as_the_service_has_them():
    spec = _load_spec()
    assert spec.service_value(datetime(2024, 3, 1, 2, 3, 4)) == "2024-03-01 02:03:04"
    assert spec.service_value(None) is False
    assert spec.same_value(False, "")
    assert spec.same_value(0, False)
    assert spec.same_value("a", "a")
    assert not spec.same_value("a", False)
    assert not spec.same_value(60, 5)


# -- the mapping onto Odoo's exceptions (with a stand-in for odoo.exceptions) -------------------


@pytest.fixture
def odoo_stub(addon, monkeypatch):
    """Just enough of ``odoo`` for ``exceptions.py``: the classes, as Odoo 17 nests them."""
    import types

    exceptions = types.ModuleType("odoo.exceptions")

    class UserError(Exception):
        pass

    for name in ("ValidationError", "AccessDenied", "AccessError", "MissingError"):
        setattr(exceptions, name, type(name, (UserError,), {}))
    exceptions.UserError = UserError
    odoo = types.ModuleType("odoo")
    odoo._ = lambda source, *args: source % args if args else source
    odoo.exceptions = exceptions
    monkeypatch.setitem(sys.modules, "odoo", odoo)
    monkeypatch.setitem(sys.modules, "odoo.exceptions", exceptions)
    monkeypatch.delitem(sys.modules, "mts_connector.exceptions", raising=False)
    module = addon.import_pure("exceptions")
    yield module, exceptions
    sys.modules.pop("mts_connector.exceptions", None)


@pytest.mark.parametrize(
    ("error_class", "odoo_class"),
    [
        ("ServiceValidationError", "ValidationError"),
        ("ServiceUserError", "UserError"),
        ("ServiceAccessDenied", "AccessDenied"),
        ("ServiceAccessError", "AccessError"),
        ("ServiceMissingError", "MissingError"),
        ("ServiceUnreachable", "UserError"),
        ("ServiceNotConfigured", "UserError"),
        ("ServiceProtocolError", "UserError"),
        ("ServiceError", "UserError"),
    ],
)
def test_each_client_error_becomes_its_odoo_exception(addon, odoo_stub, error_class, odoo_class):
    module, odoo_exceptions = odoo_stub
    err = getattr(addon.errors, error_class)("the service's message")
    assert err.odoo_exception == odoo_class
    mapped = module.to_odoo(err)
    assert isinstance(mapped, getattr(odoo_exceptions, odoo_class))
    if odoo_class == "UserError":  # not one of the subclasses
        assert not isinstance(mapped, (odoo_exceptions.ValidationError, odoo_exceptions.MissingError))
    assert "the service's message" in str(mapped)
