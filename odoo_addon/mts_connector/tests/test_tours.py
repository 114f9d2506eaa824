# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""Tours in headless Chromium through the real Odoo 17 web client, against the real
connector service and the real MTS (static/tests/tours/mts_connector_tours.js)."""

import logging

from odoo.tests import HttpCase, tagged

from .. import client, service_errors
from .common import CLOSED_URL, REAL, skip_without_real, use_real_service, warm_manifests

_logger = logging.getLogger(__name__)


@tagged("post_install", "-at_install", "mts_real", "mts_tour")
class TestTours(HttpCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        if not (REAL["service_url"] and REAL["mts_url"]):
            skip_without_real("no real connector service or MTS (scripts/real/run.sh)")
        warm_manifests()

    def setUp(self):
        super().setUp()
        use_real_service(self.env)
        defaults = self.env["ir.default"]
        for field, value in (
            ("mts_url", REAL["mts_url"]),
            ("odk_base_url", CLOSED_URL),
            ("odk_odata_url", f"{CLOSED_URL}/v1/projects/1/forms/tour.svc/Submissions"),
            ("odk_email", "collector@example.org"),
            ("callback_url", "https://registry.example.org/api/v1/registry/individual"),
            ("callback_authtype", "none"),
        ):
            defaults.set("mts.connector", field, value)
        self.addCleanup(client.forget_logins)

    def _forget_in_service(self, connectors):
        service = self.env["mts.connector.service"]
        for sid in connectors.mapped("service_id"):
            for method in ("action_stop", "unlink"):
                try:
                    service._call_raw("mts.connector", method, [[sid]])
                except service_errors.ServiceError as err:
                    _logger.info("clean-up: %s of connector %s refused (%s)", method, sid, err.remote_name)

    def test_form_create_start_a_run_in_the_runs_tab_stop(self):
        self.start_tour("/web", "mts_connector_form_tour", login="admin", timeout=120)
        connector = self.env["mts.connector"].search([("name", "=", "Tour connector")])
        self.addCleanup(self._forget_in_service, connector)
        self.assertEqual(len(connector), 1)
        connector.invalidate_recordset()
        self.assertEqual(connector.job_status, "completed")
        self.assertTrue(connector.odk_password_set)
        (row,) = self.env["mts.connector.service"]._call_raw(
            "mts.connector", "read", [[connector.service_id]], {"fields": ["mts_url", "odk_password"]}
        )
        self.assertEqual(row, {"id": connector.service_id, "mts_url": REAL["mts_url"], "odk_password": "********"})

    def test_settings_test_the_connection(self):
        self.start_tour("/web", "mts_connector_settings_tour", login="admin", timeout=60)

    def test_the_service_down_gives_a_warning_dialog(self):
        connector = self.env["mts.connector"].create(
            {
                "name": "Down connector",
                "input_type": "odk",
                "is_recurring": "recurring",
                "interval_minutes": 60,
                "odk_password": "pw",
            }
        )
        self.addCleanup(self._forget_in_service, connector)
        use_real_service(self.env, url=CLOSED_URL)
        self.start_tour("/web", "mts_connector_service_down_tour", login="admin", timeout=60)
        connector.invalidate_recordset()
        self.assertEqual(connector.name, "Down connector")
        use_real_service(self.env)
