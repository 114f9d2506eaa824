# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""The model forwards to the service first and stores only what it accepted."""

from odoo.exceptions import AccessError, MissingError, UserError, ValidationError
from odoo.tests import new_test_user, tagged

from .. import service_errors
from .common import MtsConnectorCase


@tagged("post_install", "-at_install")
class TestConnectorForwarding(MtsConnectorCase):
    def test_create_sends_the_whole_connector_then_stores_it(self):
        connector = self.create_connector()
        (call,) = self.service.calls_to("create")
        (payload,) = call[2][0]
        self.assertEqual(payload["name"], "ODK survey")
        self.assertEqual(payload["odk_password"], "odk-secret-pw")
        # Odoo's defaults go to the service too, the same as the service's own.
        self.assertEqual(payload["lang_code"], "eng")
        self.assertEqual(payload["settle_seconds"], 120)
        self.assertEqual(payload["vid_id_type"], "MOSIP VID")
        self.assertEqual(payload["uin_token_id_type"], "MOSIP UIN TOKEN")
        self.assertEqual(connector.service_id, 1)
        self.assertEqual(connector.service_create_date, "2024-01-01 00:00:01")
        self.assertEqual(connector.job_status, "draft")

    def test_a_batch_is_one_call(self):
        connectors = self.Connector.create([self.odk_vals(name="a"), self.odk_vals(name="b")])
        self.assertEqual(len(self.service.calls_to("create")), 1)
        self.assertEqual(connectors.mapped("service_id"), [1, 2])
        connectors.write({"interval_minutes": 30})
        (write,) = self.service.calls_to("write")
        self.assertEqual(write[2], [[1, 2], {"interval_minutes": 30}])
        self.service.calls.clear()
        self.assertEqual(connectors.mapped("job_status"), ["draft", "draft"])
        self.assertEqual(len(self.service.calls_to("search_read")), 1)

    def test_a_refused_create_stores_nothing(self):
        self.service.refuse["create"] = service_errors.ServiceValidationError(
            "Mapping (mapping): not valid JSON", remote_name="odoo.exceptions.ValidationError"
        )
        with self.assertRaisesRegex(ValidationError, "Mapping \\(mapping\\): not valid JSON"):
            self.create_connector(mapping="{")
        self.assertFalse(self.Connector.search([("name", "=", "ODK survey")]))

    def test_a_refused_write_changes_nothing(self):
        connector = self.create_connector()
        self.service.refuse["write"] = service_errors.ServiceValidationError(
            "Cron Expression (UTC) (cron_expression): not valid"
        )
        with self.assertRaises(ValidationError):
            connector.write({"cron_expression": "every day", "name": "renamed"})
        self.assertEqual(connector.name, "ODK survey")
        self.assertFalse(connector.cron_expression)

    def test_secrets_are_sent_when_changed_and_never_read_back(self):
        connector = self.create_connector()
        self.assertFalse(connector.odk_password)
        self.assertTrue(connector.odk_password_set)
        self.assertEqual(connector.read(["odk_password"])[0]["odk_password"], False)
        connector.write({"name": "renamed"})
        self.assertNotIn("odk_password", self.service.calls_to("write")[-1][2][1])
        connector.write({"odk_password": "new-pw"})
        self.assertEqual(self.service.calls_to("write")[-1][2][1], {"odk_password": "new-pw"})
        self.assertEqual(self.service.connectors[1]["secrets"]["odk_password"], "new-pw")
        connector.write({"odk_password": False})
        self.assertFalse(connector.odk_password_set)

    def test_unlink_forwards_and_refuses_running_connectors(self):
        running, draft = self.Connector.create([self.odk_vals(name="r"), self.odk_vals(name="d")])
        running.action_start()
        self.assertEqual(running.job_status, "running")
        with self.assertRaisesRegex(UserError, "Stop these connectors"):
            running.unlink()
        self.assertFalse(self.service.calls_to("unlink"))
        draft.unlink()
        self.assertEqual(self.service.calls_to("unlink")[0][2], [[2]])
        self.assertNotIn(2, self.service.connectors)

    def test_unlink_of_a_connector_the_service_lost(self):
        connector = self.create_connector()
        self.service.reset()
        connector.unlink()
        self.assertFalse(connector.exists())

    def test_copy_is_done_by_the_service(self):
        connector = self.create_connector()
        duplicate = connector.copy()
        (call,) = self.service.calls_to("copy")
        self.assertEqual(call[2], [1])
        self.assertEqual(call[3]["default"]["name"], "ODK survey (copy)")
        self.assertEqual(duplicate.service_id, 2)
        self.assertEqual(duplicate.name, "ODK survey (copy)")
        self.assertTrue(duplicate.odk_password_set)
        self.assertEqual(len(self.service.calls_to("create")), 1)

    def test_actions_call_the_service_with_every_id_at_once(self):
        connectors = self.Connector.create([self.odk_vals(name="a"), self.odk_vals(name="b")])
        connectors.action_start()
        self.assertEqual(self.service.calls_to("action_start")[0][2], [[1, 2]])
        self.assertEqual(set(connectors.mapped("job_status")), {"running"})
        connectors.action_stop()
        self.assertEqual(set(connectors.mapped("job_status")), {"completed"})
        connectors.action_restart()
        self.assertEqual(self.service.calls_to("action_restart")[0][2], [[1, 2]])
        with self.assertRaisesRegex(UserError, "is running"):
            connectors.action_start()

    def test_run_now_and_runs_list(self):
        connector = self.create_connector()
        connector.action_run_now()
        self.assertEqual(self.service.calls_to("action_run_now")[0][2], [[1]])
        connector.invalidate_recordset()
        self.assertEqual(connector.last_run_name, "#1")
        self.assertEqual(connector.last_run_state, "queued")
        self.assertEqual(connector.run_ids.mapped("name"), ["#1"])
        action = connector.action_view_runs()
        runs = self.env["mts.connector.run"].search(action["domain"])
        self.assertEqual(runs.connector_id, connector)
        self.assertEqual(runs.state, "queued")

    def test_import_wizard_sends_the_window(self):
        connector = self.create_connector()
        wizard = self.env["mts.connector.import.wizard"].create(
            {
                "connector_ids": [(6, 0, connector.ids)],
                "window_start": "2024-03-01 00:00:00",
                "window_end": "2024-03-02 00:00:00",
            }
        )
        action = wizard.action_import()
        (call,) = self.service.calls_to("action_import")
        self.assertEqual(call[2], [[1], "2024-03-01 00:00:00", "2024-03-02 00:00:00"])
        self.assertEqual(action["res_model"], "mts.connector.run")

    def test_test_connection_shows_the_report(self):
        connector = self.create_connector()
        action = connector.action_test_connection()
        report = self.env["mts.connector.report"].browse(action["res_id"])
        self.assertEqual(report.report, self.service.test_report)

    def test_failed_deliveries_and_retry(self):
        connector = self.create_connector()
        run_id = self.service.add_run(1, state="done_with_errors")
        self.service.add_delivery(1, run_id)
        self.assertEqual(connector.failed_delivery_count, 1)
        self.assertEqual(connector.failed_delivery_ids.last_status, 502)
        connector.action_retry_failed()
        self.assertEqual(self.service.calls_to("action_retry_failed")[0][2], [[1]])
        self.assertEqual(connector.failed_delivery_count, 0)

    def test_a_method_the_service_lacks_is_a_user_error_with_its_message(self):
        connector = self.create_connector()
        self.service.refuse["action_retry_failed"] = service_errors.ServiceError(
            'The method "action_retry_failed" does not exist on the model "mts.connector"',
            remote_name="builtins.AttributeError",
        )
        with self.assertRaisesRegex(UserError, "does not exist on the model"):
            connector.action_retry_failed()

    def test_missing_in_service_is_a_missing_error(self):
        connector = self.create_connector()
        self.service.refuse["action_run_now"] = self.service._missing([1])
        with self.assertRaises(MissingError):
            connector.action_run_now()

    def test_an_unreachable_service_fails_actions_but_not_lists(self):
        connector = self.create_connector()
        connector.invalidate_recordset()
        unreachable = service_errors.ServiceUnreachable(
            "The connector service is unreachable at http://connector-service.test (Connection refused)."
        )
        self.service.refuse["search_read"] = unreachable
        self.service.refuse["action_start"] = unreachable
        self.assertFalse(connector.job_status)
        self.assertIn("unreachable at http://connector-service.test", connector.service_message)
        with self.assertRaisesRegex(UserError, "unreachable at http://connector-service.test"):
            connector.action_start()

    def test_job_status_is_searchable(self):
        running, draft = self.Connector.create([self.odk_vals(name="r"), self.odk_vals(name="d")])
        running.action_start()
        self.assertEqual(self.Connector.search([("job_status", "=", "running")]), running)
        self.assertEqual(self.Connector.search([("job_status", "in", ["draft"])]), draft)

    def test_internal_users_keep_upstreams_full_access(self):
        """OpenG2P's mts_connector gave every internal user full access: so does this addon."""
        user = new_test_user(self.env, login="mts_user", groups="base.group_user")
        connector = self.Connector.with_user(user).create(self.odk_vals(name="by a user"))
        connector.write({"name": "renamed"})
        connector.action_start()
        connector.action_stop()
        connector.unlink()
        for method in ("create", "write", "action_start", "action_stop", "unlink"):
            self.assertEqual(len(self.service.calls_to(method)), 1, method)

    def test_portal_users_have_no_access(self):
        connector = self.create_connector()
        portal = new_test_user(self.env, login="mts_portal", groups="base.group_portal")
        with self.assertRaises(AccessError):
            connector.with_user(portal).read(["name"])
        with self.assertRaises(AccessError):
            self.Connector.with_user(portal).create(self.odk_vals(name="nope"))
        self.assertEqual(len(self.service.calls_to("create")), 1)

    def test_managers_may_create_and_act(self):
        manager = new_test_user(
            self.env,
            login="mts_manager",
            groups="base.group_user,mts_connector.group_mts_connector_manager",
        )
        connector = self.Connector.with_user(manager).create(self.odk_vals(name="m"))
        connector.action_start()
        self.assertEqual(connector.job_status, "running")
        self.assertTrue(connector.odk_password_set)
