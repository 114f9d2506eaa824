# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""A text the service wrote (connection test, request preview), shown in a dialog."""

from odoo import fields, models


class MtsConnectorReport(models.TransientModel):
    _name = "mts.connector.report"
    _description = "MTS Connector Service Report"

    name = fields.Char(string="Title", readonly=True)
    report = fields.Text(readonly=True)
