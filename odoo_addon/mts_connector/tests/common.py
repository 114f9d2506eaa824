# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""A recording double of the connector service, and the test case that installs it."""

import copy
import logging
import os
import time
import unittest
from contextlib import contextmanager
from unittest.mock import patch

import odoo.http
from odoo.tests.common import TransactionCase

from .. import client, service_errors

_logger = logging.getLogger(__name__)

MASK = "********"
SECRETS = (
    "odk_password",
    "callback_auth_password",
    "callback_auth_client_secret",
    "callback_auth_token",
    "odoo_password",
)


def _matches(row, domain):
    """A tiny domain matcher: implicit AND of [field, op, value] terms."""
    for field, operator, value in domain:
        current = row.get(field)
        if isinstance(current, list):  # many2one [id, name]
            current = current[0]
        if operator == "=" and current != value:
            return False
        if operator == "!=" and current == value:
            return False
        if operator == "in" and current not in value:
            return False
        if operator == "not in" and current in value:
            return False
    return True


class RecordingService:
    """Stands in for ``client.ServiceClient``: records each call, answers from memory.

    ``calls`` lists ``(model, method, args, kwargs)``; ``refuse[method]`` is an
    exception (of ``service_errors``) raised instead of answering.
    """

    safe_url = "http://connector-service.test"

    def __init__(self):
        self.calls = []
        self.refuse = {}
        self.connectors = {}
        self.runs = {}
        self.deliveries = {}
        self._next_id = {"mts.connector": 1, "mts.connector.run": 1}
        self.test_report = "MTS: reachable\nODK: reachable\nCallback: reachable"

    # -- what tests look at -------------------------------------------------------------

    def calls_to(self, method, model="mts.connector"):
        return [call for call in self.calls if call[0] == model and call[1] == method]

    def reset(self):
        """The service lost its data (a new, empty data directory)."""
        self.connectors.clear()
        self.runs.clear()
        self.deliveries.clear()
        self._next_id = {"mts.connector": 1, "mts.connector.run": 1}

    def add_run(self, connector_id, **values):
        run_id = self._new_id("mts.connector.run")
        row = {
            "id": run_id,
            "name": f"#{run_id}",
            "connector_id": [connector_id, self.connectors[connector_id]["name"]],
            "trigger": "manual",
            "window_start": "2024-01-01 00:00:00",
            "window_end": "2024-01-02 00:00:00",
            "state": "done",
            "mts_status": "processed",
            "records_sent": 3,
            "records_received": 3,
            "records_delivered": 3,
            "records_failed": 0,
            "error_message": False,
            "create_date": "2024-01-02 00:00:05",
        }
        row.update(values)
        self.runs[run_id] = row
        self.connectors[connector_id]["last_run_id"] = [run_id, row["name"]]
        return run_id

    def add_delivery(self, connector_id, run_id, state="failed"):
        delivery_id = len(self.deliveries) + 1
        self.deliveries[delivery_id] = {
            "id": delivery_id,
            "connector_id": [connector_id, self.connectors[connector_id]["name"]],
            "run_id": [run_id, self.runs[run_id]["name"]],
            "key": f"key-{delivery_id}",
            "state": state,
            "attempts": 5,
            "last_status": 502,
            "last_error": "Bad Gateway",
        }
        return delivery_id

    # -- the client's interface -------------------------------------------------------

    def version(self):
        return {"server_version": "17.0", "mts_connector_version": "0.1.0"}

    def authenticate(self):
        return 2

    def execute_kw(self, model, method, args=None, kwargs=None):
        args = list(args or [])
        kwargs = dict(kwargs or {})
        self.calls.append((model, method, copy.deepcopy(args), copy.deepcopy(kwargs)))
        if method in self.refuse:
            raise self.refuse[method]
        handler = getattr(self, "_" + model.replace(".", "_") + "_" + method, None)
        if handler is None:
            handler = getattr(self, "_" + method, None)
        if handler is None:
            raise service_errors.ServiceError(
                f"The method {method!r} does not exist on the model {model!r}",
                remote_name="builtins.AttributeError",
            )
        return handler(model, *args, **kwargs)

    # -- generic methods -------------------------------------------------------------------

    def _table(self, model):
        return {
            "mts.connector": self.connectors,
            "mts.connector.run": self.runs,
            "mts.connector.delivery": self.deliveries,
        }[model]

    def _new_id(self, model):
        new_id = self._next_id[model]
        self._next_id[model] += 1
        return new_id

    def _render(self, row, fields=None):
        out = {"id": row["id"]}
        for name in fields or [k for k in row if k != "secrets"]:
            if name in SECRETS:
                out[name] = MASK if row.get("secrets", {}).get(name) else False
            else:
                out[name] = row.get(name, False)
        return out

    def _search(self, model, domain=None, offset=0, limit=None, order=None):
        rows = [row for row in self._table(model).values() if _matches(row, domain or [])]
        if order == "id desc":
            rows.sort(key=lambda row: -row["id"])
        rows = rows[offset : offset + limit if limit else None]
        return [row["id"] for row in rows]

    def _search_read(self, model, domain=None, fields=None, offset=0, limit=None, order=None):
        table = self._table(model)
        return [self._render(table[i], fields) for i in self._search(model, domain, offset, limit, order)]

    def _missing(self, ids):
        return service_errors.ServiceMissingError(
            f"Record does not exist or has been deleted.\n(Record: mts.connector({ids}), User: 2)",
            remote_name="odoo.exceptions.MissingError",
        )

    def _records(self, ids):
        absent = [i for i in ids if i not in self.connectors]
        if absent:
            raise self._missing(absent)
        return [self.connectors[i] for i in ids]

    def _apply(self, row, vals):
        for name, value in vals.items():
            if name in SECRETS:
                if value and value != MASK:
                    row.setdefault("secrets", {})[name] = value
                elif not value:
                    row.setdefault("secrets", {}).pop(name, None)
            else:
                row[name] = value

    # -- mts.connector ---------------------------------------------------------------------

    def _mts_connector_create(self, model, vals_list):
        ids = []
        for vals in vals_list:
            new_id = self._new_id(model)
            row = {
                "id": new_id,
                "job_status": "draft",
                "next_run_at": False,
                "last_run_id": False,
                "create_date": f"2024-01-01 00:00:{new_id:02d}",
                "secrets": {},
            }
            self._apply(row, vals)
            self.connectors[new_id] = row
            ids.append(new_id)
        return ids

    def _mts_connector_write(self, model, ids, vals):
        for row in self._records(ids):
            self._apply(row, vals)
        return True

    def _mts_connector_unlink(self, model, ids):
        rows = self._records(ids)
        for row in rows:
            if row["job_status"] in ("started", "running"):
                raise service_errors.ServiceUserError(
                    f'Connector "{row["name"]}" is {row["job_status"]}; stop it before deleting it.',
                    remote_name="odoo.exceptions.UserError",
                )
        for row in rows:
            del self.connectors[row["id"]]
        return True

    def _mts_connector_copy(self, model, connector_id, default=None):
        (row,) = self._records([connector_id])
        new = copy.deepcopy(row)
        new["id"] = self._new_id(model)
        new["job_status"] = "draft"
        new["last_run_id"] = False
        new["create_date"] = f"2024-01-01 00:00:{new['id']:02d}"
        new["name"] = f"{row['name']} (copy)"
        self._apply(new, default or {})
        self.connectors[new["id"]] = new
        return new["id"]

    def _set_status(self, ids, allowed, status):
        for row in self._records(ids):
            if row["job_status"] not in allowed:
                raise service_errors.ServiceUserError(
                    f'Connector "{row["name"]}" is {row["job_status"]}.',
                    remote_name="odoo.exceptions.UserError",
                )
        for row in self._records(ids):
            row["job_status"] = status
        return True

    def _mts_connector_action_start(self, model, ids):
        return self._set_status(ids, ("draft", "completed"), "running")

    def _mts_connector_action_stop(self, model, ids):
        return self._set_status(ids, ("started", "running"), "completed")

    def _mts_connector_action_restart(self, model, ids):
        return self._set_status(ids, ("completed",), "running")

    def _mts_connector_action_run_now(self, model, ids):
        return [self.add_run(row["id"], trigger="manual", state="queued") for row in self._records(ids)]

    def _mts_connector_action_import(self, model, ids, window_start, window_end):
        return [
            self.add_run(row["id"], trigger="manual", state="queued", window_start=window_start, window_end=window_end)
            for row in self._records(ids)
        ]

    def _mts_connector_action_test_connection(self, model, ids):
        self._records(ids)
        return self.test_report

    def _mts_connector_action_retry_failed(self, model, ids):
        self._records(ids)
        for delivery in self.deliveries.values():
            if delivery["connector_id"][0] in ids and delivery["state"] == "failed":
                delivery["state"] = "pending"
        return True

    def _mts_connector_preview_mts_request(self, model, ids, window_start=None, window_end=None):
        rows = self._records(ids)
        return {"request": {"odkconfig": {"password": MASK if rows[0]["secrets"].get("odk_password") else ""}}}


@contextmanager
def trap_service_calls(env, service=None):
    """Replaces the connector service by ``service`` (a new ``RecordingService``) and yields it."""
    service = service or RecordingService()
    model_class = type(env["mts.connector.service"])
    with patch.object(model_class, "_get_client", lambda self, overrides=None: service):
        yield service


def odk_vals(**values):
    """A valid ODK connector's values, with ``values`` on top."""
    vals = {
        "name": "ODK survey",
        "input_type": "odk",
        "is_recurring": "recurring",
        "interval_minutes": 60,
        "odk_base_url": "https://odk.example.org",
        "odk_odata_url": "https://odk.example.org/v1/projects/1/forms/f.svc",
        "odk_email": "collector@example.org",
        "odk_password": "odk-secret-pw",
        "callback_url": "https://registry.example.org/api/v1/registry/individual",
        "callback_authtype": "none",
    }
    vals.update(values)
    return vals


class MtsConnectorCase(TransactionCase):
    """Connectors against a recording double of the service."""

    def setUp(self):
        super().setUp()
        trap = trap_service_calls(self.env)
        self.service = trap.__enter__()
        self.addCleanup(trap.__exit__, None, None, None)
        self.Connector = self.env["mts.connector"]

    def odk_vals(self, **values):
        return odk_vals(**values)

    def create_connector(self, **values):
        return self.Connector.create(self.odk_vals(**values))


#: The real systems the integration tier (scripts/real/run.sh) started for these tests.
#: Unset (the plain Python suite, or odoo-bin run by hand): the tests that need them skip.
REAL = {
    "service_url": os.environ.get("MTSC_TEST_SERVICE_URL", ""),
    "api_key": os.environ.get("MTSC_TEST_SERVICE_API_KEY", ""),
    "mts_url": os.environ.get("MTSC_TEST_MTS_URL", ""),
    "mts_partner_id": os.environ.get("MTSC_TEST_MTS_PARTNER_ID", ""),
    "bin": os.environ.get("MTSC_TEST_BIN", ""),
}
def warm_manifests():
    """Reads every module's manifest once, in this thread, before a browser sends the web
    client's requests in parallel: CPython 3.11 can fail to compile two manifests at once
    in Odoo's request threads ("AST constructor recursion depth mismatch", a CPython race
    fixed later), which answers the web client with an HTML 500 page."""
    return odoo.http.root.statics


def skip_without_real(reason):
    """Skips a test that needs the real systems; under the integration tier
    (MTSC_TEST_REQUIRE_REAL=1) a missing system is a failure, never a silent skip."""
    if os.environ.get("MTSC_TEST_REQUIRE_REAL"):
        raise RuntimeError(f"the integration tier requires it: {reason}")
    raise unittest.SkipTest(reason)


#: A local port nothing listens on (the discard port): MTS and ODK there make runs retry.
CLOSED_URL = "http://127.0.0.1:9"


def use_real_service(env, url=None):
    """Points the addon at the real service (or at ``url``) for this transaction."""
    params = env["ir.config_parameter"].sudo()
    params.set_param("mts_connector.service_url", url or REAL["service_url"])
    params.set_param("mts_connector.service_api_key", REAL["api_key"])
    params.set_param("mts_connector.service_timeout", "10")
    client.forget_logins()


class RealServiceCase(TransactionCase):
    """Connectors against the real mts-connector binary (no double)."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        if not REAL["service_url"]:
            skip_without_real("no real connector service: MTSC_TEST_SERVICE_URL is unset (scripts/real/run.sh)")
        use_real_service(cls.env)
        cls.Connector = cls.env["mts.connector"]

    def service_call(self, model, method, *args, **kwargs):
        return self.env["mts.connector.service"]._call_raw(model, method, list(args), kwargs)

    def odk_vals(self, **values):
        return odk_vals(
            **{
                "name": f"Real ODK {self._testMethodName}",
                "mts_url": CLOSED_URL,
                "odk_base_url": CLOSED_URL,
                "odk_odata_url": f"{CLOSED_URL}/v1/projects/1/forms/f.svc/Submissions",
                **values,
            }
        )

    def create_connector(self, **values):
        connector = self.Connector.create(self.odk_vals(**values))
        self.addCleanup(self._forget, connector.service_id)
        return connector

    def _forget(self, service_id):
        """Stops and deletes the test's connector in the service (Odoo rolls back its own copy)."""
        for method in ("action_stop", "unlink"):
            try:
                self.service_call("mts.connector", method, [service_id])
            except service_errors.ServiceError as err:
                _logger.info("clean-up: %s of connector %s refused (%s)", method, service_id, err.remote_name)

    def wait_for(self, what, check, timeout=20.0):
        """Polls ``check`` (against the service) until it answers something true."""
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value:
                return value
            if time.monotonic() > deadline:
                self.fail(f"timed out waiting for {what}")
            time.sleep(0.2)
