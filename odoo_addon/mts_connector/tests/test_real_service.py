# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""The addon against the real mts-connector binary, in a real Odoo 17 with the OpenG2P
registry modules (and g2p_mts) installed: scripts/real/run.sh starts the service and
passes its URL and API key (MTSC_TEST_SERVICE_URL, MTSC_TEST_SERVICE_API_KEY)."""

from lxml import etree

from odoo.exceptions import UserError, ValidationError
from odoo.http import serialize_exception
from odoo.tests import new_test_user, tagged
from odoo.tests.common import TransactionCase

from .. import client
from ..exceptions import ConnectorServiceError
from .common import CLOSED_URL, RealServiceCase, use_real_service


@tagged("post_install", "-at_install", "mts_real")
class TestRealService(RealServiceCase):
    def test_create_and_write_reach_the_service_and_secrets_stay_masked(self):
        connector = self.create_connector()
        self.assertTrue(connector.service_id)
        (row,) = self.service_call(
            "mts.connector", "read", [connector.service_id], fields=["name", "odk_password", "job_status"]
        )
        self.assertEqual(row["name"], connector.name)
        self.assertEqual(row["odk_password"], "********")
        self.assertEqual(row["job_status"], "draft")
        connector.write({"name": "Renamed in Odoo"})
        (row,) = self.service_call("mts.connector", "read", [connector.service_id], fields=["name"])
        self.assertEqual(row["name"], "Renamed in Odoo")
        self.assertTrue(connector.odk_password_set)

    def test_the_service_refuses_bad_values_with_a_validation_error(self):
        with self.assertRaisesRegex(ValidationError, "mapping"):
            self.Connector.create(self.odk_vals(mapping="{not json"))
        with self.assertRaisesRegex(ValidationError, "registry needs callback_mode = relay"):
            self.Connector.create(self.odk_vals(delivery_target="registry", callback_mode="direct"))
        self.assertFalse(self.Connector.search([("name", "=", self.odk_vals()["name"])]))

    def test_start_and_stop_change_the_job_status_kept_by_the_service(self):
        connector = self.create_connector()
        connector.action_start()
        self.assertEqual(connector.job_status, "running")
        self.assertEqual(self.Connector.search([("job_status", "=", "running"), ("id", "=", connector.id)]), connector)
        connector.action_stop()
        self.assertEqual(connector.job_status, "completed")

    def test_run_now_is_hidden_while_the_connector_has_an_open_run(self):
        """Run now right after Start used to be always refused while the button showed."""
        connector = self.create_connector()
        connector.action_start()
        self.wait_for("the first run", lambda: connector._invalidate_service_state() or connector.has_open_run)
        arch = etree.fromstring(self.Connector.get_views([(False, "form")])["views"]["form"]["arch"])
        (button,) = arch.xpath("//header/button[@name='action_run_now']")
        self.assertIn("has_open_run", button.get("invisible"))
        # A call that races the button is still refused, as a warning.
        with self.assertRaisesRegex(UserError, "already has a run in progress"):
            connector.action_run_now()
        connector.action_stop()
        connector._invalidate_service_state()
        self.assertFalse(connector.has_open_run)

    def test_a_retrying_run_of_a_stopped_connector_is_cancelled_from_the_runs_tab(self):
        """A run queued by Run now on a completed connector kept retrying and could not be cancelled."""
        connector = self.create_connector()
        connector.action_start()
        connector.action_stop()
        connector.action_run_now()

        def open_runs():
            connector._invalidate_service_state()
            rows = connector.run_ids.read(["service_id", "state"])
            return [row for row in rows if row["state"] in ("queued", "retrying")]

        (row,) = self.wait_for("a retrying run", open_runs)
        self.assertEqual(connector.job_status, "completed")
        # The Cancel button of the Runs tab, on the row shown.
        self.env["mts.connector.run"].browse(row["id"]).action_cancel()
        connector._invalidate_service_state()
        states = {r["service_id"]: r["state"] for r in connector.run_ids.read(["service_id", "state"])}
        self.assertEqual(states[row["service_id"]], "cancelled")
        self.assertEqual(connector.last_run_state, "cancelled")
        self.assertFalse(connector.has_open_run)
        # A run that ended cannot be cancelled: a warning, not a traceback.
        ended = connector.run_ids.filtered(lambda r: r.service_id == row["service_id"])
        with self.assertRaisesRegex(UserError, "has ended"):
            ended.action_cancel()

    def test_the_service_down_gives_a_warning_and_reads_keep_working(self):
        connector = self.create_connector(name="Down connector")
        use_real_service(self.env, url=CLOSED_URL)
        connector.invalidate_recordset()
        # Reads come from Odoo's copy, with the reason the state is missing.
        self.assertEqual(connector.name, "Down connector")
        self.assertIn('"vid"', connector.mapping)
        self.assertIn("unreachable", connector.service_message)
        self.assertFalse(connector.job_status)
        self.assertEqual(self.Connector.search([("id", "=", connector.id)]).name, "Down connector")
        # A change fails with the reason, as an exception the web client shows as a warning.
        with self.assertRaisesRegex(UserError, "unreachable at http://127.0.0.1:9") as caught:
            connector.write({"name": "Renamed while down"})
        self.assertIsInstance(caught.exception, ConnectorServiceError)
        data = serialize_exception(caught.exception)
        self.assertEqual(data["context"], {"exception_class": "odoo.exceptions.UserError"})
        self.assertNotIn("odoo-secret", str(data["message"]))
        use_real_service(self.env)

    def test_internal_users_have_upstreams_full_access(self):
        user = new_test_user(self.env, login="mts_real_user", groups="base.group_user")
        connector = self.Connector.with_user(user).create(self.odk_vals(name="Made by an internal user"))
        self.addCleanup(self._forget, connector.service_id)
        connector.write({"interval_minutes": 30})
        connector.action_start()
        self.assertEqual(connector.job_status, "running")
        connector.action_stop()
        service_id = connector.service_id
        connector.unlink()
        self.assertFalse(self.service_call("mts.connector", "search", [["id", "=", service_id]]))

    def test_import_test_connection_and_preview_come_from_the_service(self):
        connector = self.create_connector()
        wizard = self.env["mts.connector.import.wizard"].create(
            {
                "connector_ids": [(6, 0, connector.ids)],
                "window_start": "2024-01-01 00:00:00",
                "window_end": "2024-01-02 00:00:00",
            }
        )
        wizard.action_import()
        runs = self.service_call(
            "mts.connector.run", "search_read", [["connector_id", "=", connector.service_id]], fields=["trigger"]
        )
        self.assertEqual([r["trigger"] for r in runs], ["manual"])
        report = self.env["mts.connector.report"].browse(connector.action_test_connection()["res_id"]).report
        self.assertIn("FAILED", report)
        self.assertIn("127.0.0.1:9", report)
        preview = self.env["mts.connector.report"].browse(connector.action_preview_mts_request()["res_id"]).report
        self.assertIn("********", preview)
        self.assertNotIn("odk-secret-pw", preview)

    def test_settings_test_the_connection_reaches_the_service(self):
        settings = self.env["res.config.settings"].create({})
        action = settings.action_mts_connector_check_service()
        self.assertIn("login accepted", action["params"]["message"])
        settings.mts_connector_service_api_key = "wrong-key"
        with self.assertRaises(Exception) as caught:
            settings.action_mts_connector_check_service()
        self.assertNotIn("wrong-key", str(caught.exception))
        client.forget_logins()


@tagged("post_install", "-at_install")
class TestViews(TransactionCase):
    """Form fields as the web client shows them (no service needed)."""

    def test_mapping_and_output_format_are_labelled_code_fields(self):
        arch = etree.fromstring(self.env["mts.connector"].get_views([(False, "form")])["views"]["form"]["arch"])
        for name, label in (("mapping", "Mapping (JSON)"), ("output_format", "MTS Output Format (jq)")):
            (field,) = arch.xpath(f"//field[@name='{name}']")
            self.assertEqual(field.get("widget"), "code", name)
            self.assertEqual(field.get("string"), label)
            self.assertNotEqual(field.get("nolabel"), "1")
            self.assertEqual(field.getparent().tag, "group", f"{name} is labelled by its group")

    def test_deliveries_have_no_duplicate_label(self):
        fields = self.env["mts.connector.delivery"]._fields
        self.assertNotEqual(fields["service_create_date"].string, fields["create_date"].string)
