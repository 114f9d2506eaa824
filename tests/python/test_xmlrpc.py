"""The Python examples of Odoo 17's "External API" page, run unchanged (standard
library ``xmlrpc.client`` only) against the real service binary, on the model
``mts.connector`` instead of ``res.partner``; then a connector action, and the
faults Odoo gives, as ``xmlrpc.client.Fault`` with Odoo 17's codes and strings.
"""

import datetime
import http.client
import xmlrpc.client

import pytest

import connectors

ODK_PASSWORD = "odk-pw-" + "xmlrpc-5e1f"


def odk_connector(**values):
    return connectors.odk_connector(ODK_PASSWORD, **values)


@pytest.fixture
def api(service):
    """The page's "Configuration": url, db, username, password."""
    return service.url, service.db, service.login, service.api_key


@pytest.fixture
def models(api):
    url = api[0]
    return xmlrpc.client.ServerProxy("{}/xmlrpc/2/object".format(url))


@pytest.fixture
def survey_ids(api, models):
    url, db, username, password = api
    uid = xmlrpc.client.ServerProxy("{}/xmlrpc/2/common".format(url)).authenticate(db, username, password, {})
    ids = [
        models.execute_kw(db, uid, password, "mts.connector", "create", [odk_connector(name="Survey %d" % n)])
        for n in range(12)
    ]
    yield uid, ids
    models.execute_kw(db, uid, password, "mts.connector", "unlink", [ids])


# -- "Logging in" ------------------------------------------------------------------------------


def test_logging_in(api):
    url, db, username, password = api
    common = xmlrpc.client.ServerProxy("{}/xmlrpc/2/common".format(url))
    version = common.version()
    assert version["server_version"] == "17.0"
    assert version["server_version_info"][:2] == [17, 0]
    assert version["server_serie"] == "17.0"
    assert version["protocol_version"] == 1
    uid = common.authenticate(db, username, password, {})
    assert uid == 2
    assert common.login(db, username, password) == uid
    assert common.authenticate(db, username, "wrong password", {}) is False
    assert "openerp.com" in common.about()


# -- "Calling methods" -------------------------------------------------------------------------


def test_calling_methods_check_access_rights(api, models):
    """The page's first call: may the user read the model?"""
    url, db, username, password = api
    uid = xmlrpc.client.ServerProxy("{}/xmlrpc/2/common".format(url)).authenticate(db, username, password, {})
    check = "check_access_rights"
    assert models.execute_kw(db, uid, password, "mts.connector", check, ["read"], {"raise_exception": False})
    assert models.execute_kw(db, uid, password, "mts.connector", check, ["write"], {"raise_exception": False})
    # Runs are kept by the service: readable, not writable.
    assert models.execute_kw(db, uid, password, "mts.connector.run", check, ["read"])
    runs_write = models.execute_kw(db, uid, password, "mts.connector.run", check, ["write"], {"raise_exception": False})
    assert runs_write is False
    with pytest.raises(xmlrpc.client.Fault) as refused:
        models.execute_kw(db, uid, password, "mts.connector.run", check, ["unlink"])
    assert refused.value.faultCode == 4


def test_list_count_and_paginate(api, models, survey_ids):
    url, db, username, password = api
    uid, ids = survey_ids
    domain = [[["name", "like", "Survey"], ["input_type", "=", "odk"]]]
    found = models.execute_kw(db, uid, password, "mts.connector", "search", domain)
    assert found == ids
    page = models.execute_kw(db, uid, password, "mts.connector", "search", domain, {"offset": 10, "limit": 5})
    assert page == ids[10:15]
    assert models.execute_kw(db, uid, password, "mts.connector", "search_count", domain) == len(ids)


def test_read_records(api, models, survey_ids):
    url, db, username, password = api
    uid, _ = survey_ids
    domain = [[["name", "like", "Survey"]]]
    ids = models.execute_kw(db, uid, password, "mts.connector", "search", domain, {"limit": 1})
    [record] = models.execute_kw(db, uid, password, "mts.connector", "read", [ids])
    # count the number of fields fetched by default
    assert len(record) > 40
    assert record["odk_password"] == "********"  # write-only: never answered in clear
    assert record["next_run_at"] is False  # empty is False, never None
    datetime.datetime.strptime(record["create_date"], "%Y-%m-%d %H:%M:%S")  # datetimes are strings
    picked = models.execute_kw(
        db, uid, password, "mts.connector", "read", [ids], {"fields": ["name", "job_status", "interval_minutes"]}
    )
    assert picked == [{"id": ids[0], "name": "Survey 0", "job_status": "draft", "interval_minutes": 60}]


def test_list_record_fields(api, models, survey_ids):
    url, db, username, password = api
    uid, _ = survey_ids
    fields = models.execute_kw(
        db, uid, password, "mts.connector", "fields_get", [], {"attributes": ["string", "help", "type"]}
    )
    assert fields["name"]["type"] == "char"
    assert fields["job_status"]["type"] == "selection"
    assert set(fields["interval_minutes"]) <= {"string", "help", "type"}


def test_search_and_read(api, models, survey_ids):
    url, db, username, password = api
    uid, ids = survey_ids
    rows = models.execute_kw(
        db,
        uid,
        password,
        "mts.connector",
        "search_read",
        [[["name", "like", "Survey"]]],
        {"fields": ["name", "input_type", "is_recurring"], "limit": 5},
    )
    assert [row["id"] for row in rows] == ids[:5]
    assert rows[0] == {"id": ids[0], "name": "Survey 0", "input_type": "odk", "is_recurring": "recurring"}


def test_create_update_delete(api, models):
    url, db, username, password = api
    uid = xmlrpc.client.ServerProxy("{}/xmlrpc/2/common".format(url)).authenticate(db, username, password, {})
    id = models.execute_kw(db, uid, password, "mts.connector", "create", [odk_connector(name="New Connector")])
    assert isinstance(id, int)
    assert models.execute_kw(db, uid, password, "mts.connector", "write", [[id], {"name": "Newer connector"}]) is True
    # get record name after having changed it
    assert models.execute_kw(db, uid, password, "mts.connector", "read", [[id], ["display_name"]]) == [
        {"id": id, "display_name": "Newer connector"}
    ]
    assert models.execute_kw(db, uid, password, "mts.connector", "name_get", [[id]]) == [[id, "Newer connector"]]
    assert models.execute_kw(db, uid, password, "mts.connector", "unlink", [[id]]) is True
    # check if the deleted record is still in the database
    assert models.execute_kw(db, uid, password, "mts.connector", "search", [[["id", "=", id]]]) == []


def test_connector_actions(api, models, survey_ids, service):
    url, db, username, password = api
    uid, ids = survey_ids
    id = ids[0]
    # The request MTS would get, for an explicit window given as datetime objects.
    builtin = xmlrpc.client.ServerProxy("{}/xmlrpc/2/object".format(url), use_builtin_types=True)
    preview = builtin.execute_kw(
        db,
        uid,
        password,
        "mts.connector",
        "preview_mts_request",
        [[id], datetime.datetime(2026, 1, 1), datetime.datetime(2026, 1, 2)],
    )
    assert preview["request"]["odkconfig"]["startdate"] == "2026-01-01T00:00:00.000Z"
    assert preview["request"]["odkconfig"]["password"] == "********"
    assert models.execute_kw(db, uid, password, "mts.connector", "action_start", [[id]]) is True
    [row] = models.execute_kw(db, uid, password, "mts.connector", "read", [[id], ["job_status"]])
    assert row["job_status"] == "running"
    assert models.execute_kw(db, uid, password, "mts.connector", "action_stop", [[id]]) is True
    # A client that allows None may send it (as <nil/>); the service never answers it.
    lenient = xmlrpc.client.ServerProxy("{}/xmlrpc/2/object".format(url), allow_none=True)
    rows = lenient.execute_kw(
        db, uid, password, "mts.connector", "search_read", [[["id", "=", id]]], {"fields": ["name"], "context": None}
    )
    assert rows == [{"id": id, "name": "Survey 0"}]
    assert ODK_PASSWORD not in service.log and password not in service.log


# -- errors: xmlrpc.client.Fault as Odoo 17 raises it ------------------------------------------


def fault(call):
    with pytest.raises(xmlrpc.client.Fault) as raised:
        call()
    return raised.value


def test_faults_on_xmlrpc_2_have_odoos_integer_codes(api, models, survey_ids):
    url, db, username, password = api
    uid, ids = survey_ids

    def kw(model, method, args, kwargs=None, pw=password):
        return lambda: models.execute_kw(db, uid, pw, model, method, args, kwargs or {})

    denied = fault(kw("mts.connector", "search", [[]], pw="wrong password"))
    assert (denied.faultCode, denied.faultString) == (3, "Access Denied")
    invalid = fault(kw("mts.connector", "write", [[ids[0]], {"mapping": "not json"}]))
    assert invalid.faultCode == 2 and "Mapping (mapping)" in invalid.faultString
    missing = fault(kw("mts.connector", "read", [[ids[-1] + 100000]]))
    assert missing.faultCode == 2 and missing.faultString.startswith("Record does not exist or has been deleted.")
    models.execute_kw(db, uid, password, "mts.connector", "action_start", [[ids[1]]])
    running = fault(kw("mts.connector", "unlink", [[ids[1]]]))
    assert running.faultCode == 2 and "stop it before deleting it" in running.faultString
    models.execute_kw(db, uid, password, "mts.connector", "action_stop", [[ids[1]]])
    read_only = fault(kw("mts.connector.run", "create", [{"state": "done"}]))
    assert read_only.faultCode == 4
    # Odoo's execute_kw: an unknown model is a UserError ("Object ... doesn't exist").
    unknown = fault(kw("res.partner", "search", [[]]))
    assert unknown.faultCode == 2 and "Object res.partner doesn't exist" in unknown.faultString
    for call, exception in [
        (kw("mts.connector", "no_such_method", [[ids[0]]]), "AttributeError"),
        (kw("mts.connector", "search", [[["no_such_field", "=", 1]]]), "ValueError"),
    ]:
        err = fault(call)
        assert err.faultCode == 1
        assert err.faultString.startswith("Traceback (most recent call last):\n")
        assert err.faultString.strip().splitlines()[-1].startswith(exception + ": ")
    # Nothing was changed by the refused calls.
    count = models.execute_kw(db, uid, password, "mts.connector", "search_count", [[["name", "like", "Survey"]]])
    assert count == len(ids)


def test_faults_on_legacy_xmlrpc_have_odoos_string_codes(api, survey_ids):
    url, db, username, password = api
    uid, ids = survey_ids
    models = xmlrpc.client.ServerProxy("{}/xmlrpc/object".format(url))
    denied = fault(lambda: models.execute_kw(db, uid, "wrong password", "mts.connector", "search", [[]]))
    assert (denied.faultCode, denied.faultString) == ("AccessDenied", "Access Denied")
    invalid = fault(
        lambda: models.execute_kw(db, uid, password, "mts.connector", "write", [[ids[0]], {"mapping": "x"}])
    )
    assert invalid.faultCode.startswith("warning -- UserError\n\nMapping (mapping)") and invalid.faultString == ""
    missing = fault(lambda: models.execute_kw(db, uid, password, "mts.connector", "read", [[ids[-1] + 100000]]))
    assert missing.faultCode.startswith("warning -- MissingError\n\nRecord does not exist")
    unknown = fault(lambda: models.execute_kw(db, uid, password, "mts.connector", "no_such_method", [[]]))
    assert "no_such_method" in unknown.faultCode
    assert unknown.faultString.startswith("Traceback (most recent call last):\n")


def test_refused_requests(api, service):
    url = api[0]
    host, port = url.removeprefix("http://").split(":")
    # A body over 1 MiB: HTTP 413, which xmlrpc.client raises as a ProtocolError.
    common = xmlrpc.client.ServerProxy("{}/xmlrpc/2/common".format(url))
    with pytest.raises(xmlrpc.client.ProtocolError) as raised:
        common.login(service.db, "x" * (1 << 20), service.api_key)
    assert raised.value.errcode == 413
    # A billion laughs: refused with a fault, nothing expanded.
    laughs = "<!ENTITY lol 'lol'>" + "".join(
        "<!ENTITY lol%d '%s'>" % (i, ("&lol%s;" % (i - 1 if i > 1 else "")) * 10) for i in range(1, 10)
    )
    body = (
        "<?xml version='1.0'?><!DOCTYPE m [%s]><methodCall><methodName>login</methodName><params>"
        "<param><value>&lol9;</value></param></params></methodCall>" % laughs
    )
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("POST", "/xmlrpc/2/common", body, {"Content-Type": "text/xml"})
    resp = conn.getresponse()
    assert resp.status == 200
    with pytest.raises(xmlrpc.client.Fault) as raised:
        xmlrpc.client.loads(resp.read())
    assert raised.value.faultCode == 1
    assert "DTDs) are refused" in raised.value.faultString
    conn.close()
