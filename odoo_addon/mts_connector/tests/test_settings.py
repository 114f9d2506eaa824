# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""Settings: where the service is, and the registry ID types given to every connector."""

from unittest.mock import patch

from odoo.tests import tagged

from .common import MtsConnectorCase


@tagged("post_install", "-at_install")
class TestSettings(MtsConnectorCase):
    def test_settings_are_stored_as_parameters(self):
        settings = self.env["res.config.settings"].create(
            {
                "mts_connector_service_url": "http://mts-connector:8070",
                "mts_connector_service_db": "mtsc",
                "mts_connector_service_login": "odoo",
                "mts_connector_service_api_key": "a-key",
                "mts_connector_service_timeout": 12,
            }
        )
        settings.execute()
        params = self.env["ir.config_parameter"].sudo()
        self.assertEqual(params.get_param("mts_connector.service_url"), "http://mts-connector:8070")
        self.assertEqual(params.get_param("mts_connector.service_db"), "mtsc")
        self.assertEqual(params.get_param("mts_connector.service_login"), "odoo")
        self.assertEqual(params.get_param("mts_connector.service_timeout"), "12")
        service = self.env["mts.connector.service"]
        self.assertEqual(service._setting("url"), "http://mts-connector:8070")
        with patch.dict("os.environ", {"MTS_CONNECTOR_URL": "http://from-env:8070"}):
            self.assertEqual(service._setting("url"), "http://from-env:8070")

    def test_changed_id_types_reach_every_connector_in_one_call(self):
        connectors = self.Connector.create([self.odk_vals(name="a"), self.odk_vals(name="b")])
        self.service.calls.clear()
        settings = self.env["res.config.settings"].create(
            {
                "mts_connector_vid_id_type": "National VID",
                "mts_connector_uin_token_id_type": "National UIN Token",
            }
        )
        settings.execute()
        (write,) = self.service.calls_to("write")
        self.assertEqual(
            write[2],
            [[1, 2], {"vid_id_type": "National VID", "uin_token_id_type": "National UIN Token"}],
        )
        self.assertEqual(set(connectors.mapped("vid_id_type")), {"National VID"})
        new = self.create_connector(name="c")
        self.assertEqual(new.uin_token_id_type, "National UIN Token")
        self.assertEqual(self.service.calls_to("create")[-1][2][0][0]["vid_id_type"], "National VID")
