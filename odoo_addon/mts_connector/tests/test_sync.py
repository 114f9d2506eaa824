# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""The scheduled synchronisation: Odoo's configuration is pushed where the service differs."""

from odoo.tests import tagged

from .. import service_errors
from .common import MtsConnectorCase


@tagged("post_install", "-at_install")
class TestSynchronisation(MtsConnectorCase):
    def test_the_cron_is_active_every_five_minutes(self):
        cron = self.env.ref("mts_connector.ir_cron_mts_connector_sync")
        self.assertTrue(cron.active)
        self.assertEqual((cron.interval_number, cron.interval_type), (5, "minutes"))
        self.assertEqual(cron.code.strip(), "model._cron_sync_with_service()")

    def test_nothing_is_written_when_the_service_agrees(self):
        self.create_connector()
        self.service.calls.clear()
        summary = self.Connector._cron_sync_with_service()
        self.assertEqual(summary, {"created": [], "updated": [], "unknown_service_ids": []})
        self.assertFalse(self.service.calls_to("write"))
        self.assertFalse(self.service.calls_to("create"))
        # Reading is batched: one search_read for all connectors, one search.
        self.assertEqual(len(self.service.calls_to("search_read")), 1)

    def test_a_reset_service_is_repopulated_secrets_included(self):
        first, second = self.Connector.create([self.odk_vals(name="a"), self.odk_vals(name="b")])
        self.service.reset()
        self.service.calls.clear()
        summary = self.Connector._cron_sync_with_service()
        self.assertEqual(sorted(summary["created"]), sorted((first | second).ids))
        (create,) = self.service.calls_to("create")
        payloads = create[2][0]
        self.assertEqual([p["name"] for p in payloads], ["a", "b"])
        self.assertEqual({p["odk_password"] for p in payloads}, {"odk-secret-pw"})
        self.assertEqual(sorted((first | second).mapped("service_id")), [1, 2])
        self.assertEqual(first.job_status, "draft")

    def test_a_service_id_reused_after_a_reset_is_not_taken_for_ours(self):
        ours = self.create_connector(name="ours")
        self.service.reset()
        # Someone else's connector got id 1 in the new service.
        self.service.execute_kw("mts.connector", "create", [[{"name": "theirs"}]])
        self.service.connectors[1]["create_date"] = "2030-01-01 00:00:00"
        summary = self.Connector._cron_sync_with_service()
        self.assertEqual(summary["created"], ours.ids)
        self.assertEqual(ours.service_id, 2)
        self.assertEqual(summary["unknown_service_ids"], [1])
        self.assertEqual(self.service.connectors[1]["name"], "theirs")

    def test_differences_are_written_back_in_one_call_per_change(self):
        first, second = self.Connector.create([self.odk_vals(name="a"), self.odk_vals(name="b")])
        for row in self.service.connectors.values():
            row["interval_minutes"] = 5
            row["secrets"].pop("odk_password")
        self.service.calls.clear()
        summary = self.Connector._cron_sync_with_service()
        self.assertEqual(sorted(summary["updated"]), sorted((first | second).ids))
        (write,) = self.service.calls_to("write")
        self.assertEqual(sorted(write[2][0]), [1, 2])
        self.assertEqual(write[2][1], {"interval_minutes": 60, "odk_password": "odk-secret-pw"})

    def test_connectors_only_the_service_has_are_reported(self):
        self.create_connector()
        self.service.execute_kw("mts.connector", "create", [[{"name": "elsewhere"}]])
        with self.assertLogs("odoo.addons.mts_connector.models.mts_connector_sync", level="WARNING") as logs:
            summary = self.Connector._cron_sync_with_service()
        self.assertEqual(summary["unknown_service_ids"], [2])
        self.assertIn("service ids [2]", "\n".join(logs.output))

    def test_an_unreachable_service_does_not_fail_the_cron(self):
        self.create_connector()
        self.service.refuse["search_read"] = service_errors.ServiceUnreachable(
            "The connector service is unreachable at http://connector-service.test (timed out)."
        )
        summary = self.Connector._cron_sync_with_service()
        self.assertIn("unreachable", summary["error"])

    def test_a_connector_never_pushed_is_pushed_before_an_action(self):
        connector = self.Connector.with_context(mts_connector_local_only=True).create(
            dict(self.odk_vals(), service_id=False)
        )
        self.assertFalse(connector.service_id)
        connector.action_start()
        self.assertEqual(connector.service_id, 1)
        self.assertEqual(self.service.calls_to("action_start")[0][2], [[1]])
