# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""Settings > MTS Connector: how to reach the service, and the registry ID types."""

from odoo import _, api, fields, models

from .. import client
from .mts_connector_service import SETTINGS


class ResConfigSettings(models.TransientModel):
    _inherit = "res.config.settings"

    mts_connector_service_url = fields.Char(
        string="Connector Service URL",
        config_parameter=SETTINGS["url"][1],
        default=SETTINGS["url"][2],
        help="Base URL of the mts-connector service, e.g. http://mts-connector:8070 "
        "(MTS_CONNECTOR_URL on the Odoo server overrides it).",
    )
    mts_connector_service_db = fields.Char(
        string="Connector Service Database",
        config_parameter=SETTINGS["db"][1],
        default=SETTINGS["db"][2],
        help="The database name the service expects (its --db-name, default mts_connector).",
    )
    mts_connector_service_login = fields.Char(
        string="Connector Service Login",
        config_parameter=SETTINGS["login"][1],
        default=SETTINGS["login"][2],
        help="The login the service expects (its --api-login, default admin).",
    )
    mts_connector_service_api_key = fields.Char(
        string="Connector Service API Key",
        config_parameter=SETTINGS["api_key"][1],
        help="The service's API key (its MTSC_API_KEY). MTS_CONNECTOR_API_KEY on the "
        "Odoo server overrides it and keeps it out of the database.",
    )
    mts_connector_service_timeout = fields.Integer(
        string="Connector Service Timeout (s)",
        config_parameter=SETTINGS["timeout"][1],
        default=int(SETTINGS["timeout"][2]),
        help="How long Odoo waits for an answer of the service before saying it is unreachable.",
    )
    mts_connector_vid_id_type = fields.Char(
        string="MOSIP VID ID Type",
        config_parameter=SETTINGS["vid_id_type"][1],
        default=SETTINGS["vid_id_type"][2],
        help="Name of the registry ID type holding MOSIP VIDs (registry input); given to every connector.",
    )
    mts_connector_uin_token_id_type = fields.Char(
        string="MOSIP UIN Token ID Type",
        config_parameter=SETTINGS["uin_token_id_type"][1],
        default=SETTINGS["uin_token_id_type"][2],
        help="Name of the registry ID type receiving UIN tokens (registry input); given to every connector.",
    )

    @api.model
    def _mts_connector_id_types(self):
        service = self.env["mts.connector.service"]
        return {
            "vid_id_type": service._setting("vid_id_type"),
            "uin_token_id_type": service._setting("uin_token_id_type"),
        }

    def set_values(self):
        before = self._mts_connector_id_types()
        result = super().set_values()
        client.forget_logins()
        after = self._mts_connector_id_types()
        if after != before:
            connectors = self.env["mts.connector"].sudo().search([])
            if connectors:
                # One call to the service for all connectors.
                connectors.write(after)
        return result

    def action_mts_connector_check_service(self):
        """Reaches the service with the values on screen and logs in."""
        self.ensure_one()
        info = self.env["mts.connector.service"].check(
            {
                "url": self.mts_connector_service_url,
                "db": self.mts_connector_service_db,
                "login": self.mts_connector_service_login,
                "api_key": self.mts_connector_service_api_key,
                "timeout": self.mts_connector_service_timeout,
            }
        )
        version = (info.get("version") or {}).get("mts_connector_version") or _("unknown version")
        return {
            "type": "ir.actions.client",
            "tag": "display_notification",
            "params": {
                "title": _("Connector service"),
                "message": _(
                    "Reached %(url)s (mts-connector %(version)s); login accepted.",
                    url=info["url"],
                    version=version,
                ),
                "type": "success",
                "sticky": False,
            },
        }
