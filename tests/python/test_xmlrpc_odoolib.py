"""``odoo-client-lib`` (PyPI ``odoolib``, Odoo's own client library) against the real
service binary: the External API flow (login, search, search_count, read,
fields_get, search_read, create, write, unlink) and a connector action, over its
default XML-RPC connector (the legacy ``/xmlrpc/<service>`` endpoints, string fault
codes) and over its JSON-RPC connector, which must give the same answers; then its
errors.
"""

import xmlrpc.client

import odoolib
from odoolib.tools import AuthenticationError
import pytest

import connectors

ODK_PASSWORD = "odk-pw-" + "odoolib-93b2"


def odk_connector(**values):
    return connectors.odk_connector(ODK_PASSWORD, **values)


def connection(service, protocol="xmlrpc", password=None):
    host, port = service.url.removeprefix("http://").split(":")
    return odoolib.get_connection(
        hostname=host,
        protocol=protocol,
        port=int(port),
        database=service.db,
        login=service.login,
        password=service.api_key if password is None else password,
    )


def flow(service, protocol, tag):
    """The External API flow through odoolib's model proxy; what it saw, in order."""
    conn = connection(service, protocol)
    conn.check_login()
    seen = {"uid": conn.user_id}
    model = conn.get_model("mts.connector")
    ids = [model.create(odk_connector(name="%s %d" % (tag, n))) for n in range(3)]
    seen["search"] = model.search([("name", "like", tag)]) == ids
    seen["search_count"] = model.search_count([("name", "like", tag)])
    record = model.read(ids[0], ["name", "job_status", "odk_password", "next_run_at"])
    seen["read"] = {k: v for k, v in record.items() if k != "id"}
    seen["fields_get"] = model.fields_get([], attributes=["type"])["interval_minutes"]
    rows = model.search_read([("id", "in", ids)], ["name"])
    seen["search_read"] = [row["name"] for row in rows]
    seen["write"] = model.write([ids[0]], {"name": tag + " renamed"})
    seen["renamed"] = model.read([ids[0]], ["name"])[0]["name"]
    seen["action_start"] = model.action_start([ids[1]])
    seen["running"] = model.read(ids[1], ["job_status"])["job_status"]
    seen["action_stop"] = model.action_stop([ids[1]])
    preview = model.preview_mts_request([ids[2]], "2026-01-01 00:00:00", "2026-01-02 00:00:00")
    seen["preview"] = (preview["request"]["odkconfig"]["startdate"], preview["request"]["odkconfig"]["password"])
    seen["unlink"] = model.unlink(ids)
    seen["gone"] = model.search([("id", "in", ids)])
    return seen


def test_the_external_api_flow_over_xmlrpc(service):
    seen = flow(service, "xmlrpc", "Lib XML")
    assert seen == {
        "uid": 2,
        "search": True,
        "search_count": 3,
        "read": {"name": "Lib XML 0", "job_status": "draft", "odk_password": "********", "next_run_at": False},
        "fields_get": {"type": "integer"},
        "search_read": ["Lib XML 0", "Lib XML 1", "Lib XML 2"],
        "write": True,
        "renamed": "Lib XML renamed",
        "action_start": True,
        "running": "running",
        "action_stop": True,
        "preview": ("2026-01-01T00:00:00.000Z", "********"),
        "unlink": True,
        "gone": [],
    }
    assert ODK_PASSWORD not in service.log and service.api_key not in service.log


def test_xmlrpc_and_jsonrpc_give_the_same_answers(service):
    over_xml = flow(service, "xmlrpc", "Same")
    over_json = flow(service, "jsonrpc", "Same")
    assert over_xml == over_json


def test_errors_over_xmlrpc(service):
    with pytest.raises(AuthenticationError):
        connection(service, password="wrong password").check_login()
    model = connection(service).get_model("mts.connector")
    with pytest.raises(xmlrpc.client.Fault) as raised:
        model.read([10**6], ["name"])
    assert raised.value.faultCode.startswith("warning -- MissingError\n\nRecord does not exist")
    with pytest.raises(xmlrpc.client.Fault) as raised:
        model.create({"name": "incomplete"})
    assert raised.value.faultCode.startswith("warning -- UserError\n\nMissing required fields")
    with pytest.raises(xmlrpc.client.Fault) as raised:
        connection(service).get_model("mts.connector.run").create({"state": "done"})
    assert raised.value.faultCode.startswith("warning -- AccessError\n\n")
    with pytest.raises(xmlrpc.client.Fault) as raised:
        model.no_such_method([1])
    assert "no_such_method" in raised.value.faultCode
    assert raised.value.faultString.splitlines()[-1].startswith("AttributeError: ")
    # A login the service refuses after check_login succeeded (the key changed).
    stale = connection(service)
    stale.check_login()
    stale.password = "rotated away"
    with pytest.raises(xmlrpc.client.Fault) as raised:
        stale.get_model("mts.connector").search([])
    assert (raised.value.faultCode, raised.value.faultString) == ("AccessDenied", "Access Denied")
