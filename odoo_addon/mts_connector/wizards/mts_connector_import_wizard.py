# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""Import a date range: one manual run per connector over a window the user picks."""

from datetime import timedelta

from odoo import fields, models


def _now():
    return fields.Datetime.now().replace(microsecond=0)


class MtsConnectorImportWizard(models.TransientModel):
    _name = "mts.connector.import.wizard"
    _description = "MTS Connector: Import a Date Range"

    connector_ids = fields.Many2many("mts.connector", string="Connectors", required=True)
    window_start = fields.Datetime(
        string="Start",
        required=True,
        default=lambda self: _now() - timedelta(days=1),
        help="Submissions from this time on (included) are imported.",
    )
    window_end = fields.Datetime(
        string="End",
        required=True,
        default=lambda self: _now(),
        help="Submissions before this time (excluded) are imported.",
    )

    def action_import(self):
        """Asks the service for the runs (it checks the window), then shows them."""
        self.ensure_one()
        connectors = self.connector_ids
        connectors._check_may_act()
        self.env["mts.connector.service"].call(
            "mts.connector",
            "action_import",
            [
                connectors._service_ids(),
                fields.Datetime.to_string(self.window_start),
                fields.Datetime.to_string(self.window_end),
            ],
        )
        return connectors.action_view_runs()
