# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""``mts.connector.delivery``: one relayed callback, as the service reports it (never its data)."""

from odoo import fields, models

STATES = [("pending", "Pending"), ("delivered", "Delivered"), ("failed", "Failed")]


class MtsConnectorDelivery(models.TransientModel):
    _name = "mts.connector.delivery"
    _inherit = "mts.connector.service.cache"
    _description = "MTS Connector Delivery"
    _order = "service_id desc"
    _rec_name = "key"

    _service_field_map = {
        "connector_id": "connector_id",
        "run_id": "run_name",
        "key": "key",
        "state": "state",
        "attempts": "attempts",
        "last_status": "last_status",
        "last_error": "last_error",
        "next_attempt_at": "next_attempt_at",
        "create_date": "service_create_date",
        "delivered_at": "delivered_at",
    }

    run_name = fields.Char(string="Run", readonly=True)
    key = fields.Char(string="Idempotency Key", readonly=True)
    state = fields.Selection(STATES, readonly=True)
    attempts = fields.Integer(readonly=True)
    last_status = fields.Integer(string="Last HTTP Status", readonly=True)
    last_error = fields.Text(readonly=True)
    next_attempt_at = fields.Datetime(string="Next Attempt", readonly=True)
    service_create_date = fields.Datetime(string="Received on", readonly=True)
    delivered_at = fields.Datetime(string="Delivered on", readonly=True)
