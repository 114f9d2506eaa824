# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""One Settings screen: g2p_mts's ID type records are the setting, shown in the MTS
Connector app; mts_connector's names follow them; its VID clean-up switch stays off."""

from odoo import api, models

from ..hooks import CRON, neutralise_cron


class ResConfigSettings(models.TransientModel):
    _inherit = "res.config.settings"

    def set_values(self):
        for ours, theirs in (
            ("mts_connector_vid_id_type", "g2p_mts_vid_id_type"),
            ("mts_connector_uin_token_id_type", "g2p_mts_uin_token_id_type"),
        ):
            if self[theirs]:
                self[ours] = self[theirs].name
        result = super().set_values()
        neutralise_cron(self.env)
        return result

    @api.constrains("g2p_mts_vid_delete_job_status")
    def _constrains_vehicle(self):
        """g2p_mts turns its cron on from this switch; the service's clean-up replaces it."""
        cron = self.env.ref(CRON, raise_if_not_found=False)
        if cron and cron.active:
            cron.sudo().active = False
