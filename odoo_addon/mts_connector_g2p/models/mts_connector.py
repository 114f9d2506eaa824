# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""g2p_mts's Odoo-side jobs, replaced by the connector service."""

import logging

from odoo import api, models

_logger = logging.getLogger(__name__)


class MtsConnector(models.Model):
    _inherit = "mts.connector"

    @api.model
    def delete_vids_if_token(self):
        """g2p_mts's "Delete MOSIP VID Ids" job: the service runs the clean-up instead
        (each registry connector's Delete MOSIP VID Ids option), so this does nothing."""
        _logger.info("g2p_mts VID clean-up skipped: the connector service runs it (delete_vid_after_token)")
        return True

    def custom_single_action(self, mts_request):
        """g2p_mts's registry run: the service walks the registry itself."""
        _logger.info("g2p_mts registry run skipped: the connector service runs registry connectors")
        return True
