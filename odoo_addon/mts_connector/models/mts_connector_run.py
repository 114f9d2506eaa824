# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""``mts.connector.run``: one window sent to MTS and tracked, as the service reports it."""

from odoo import _, fields, models

from .connector_spec import RUN_STATES as STATES

TRIGGERS = [
    ("schedule", "Schedule"),
    ("onetime", "One-time job"),
    ("manual", "Manual import"),
    ("retry", "Retry"),
    ("vid_cleanup", "VID clean-up"),
]


class MtsConnectorRun(models.TransientModel):
    _name = "mts.connector.run"
    _inherit = "mts.connector.service.cache"
    _description = "MTS Connector Run"
    _order = "service_id desc"

    _service_field_map = {
        "name": "name",
        "connector_id": "connector_id",
        "trigger": "trigger",
        "window_start": "window_start",
        "window_end": "window_end",
        "state": "state",
        "attempts": "attempts",
        "next_attempt_at": "next_attempt_at",
        "mts_request_id": "mts_request_id",
        "mts_status": "mts_status",
        "mts_endpoint": "mts_endpoint",
        "records_expected": "records_expected",
        "records_sent": "records_sent",
        "pages_done": "pages_done",
        "records_received": "records_received",
        "records_delivered": "records_delivered",
        "records_failed": "records_failed",
        "retry_of_id": "retry_of_name",
        "error_code": "error_code",
        "error_message": "error_message",
        "create_date": "service_create_date",
        "done_date": "done_date",
    }

    name = fields.Char(string="Run", readonly=True)
    trigger = fields.Selection(TRIGGERS, readonly=True)
    window_start = fields.Datetime(readonly=True)
    window_end = fields.Datetime(readonly=True)
    state = fields.Selection(STATES, readonly=True)
    attempts = fields.Integer(readonly=True)
    next_attempt_at = fields.Datetime(string="Next Attempt", readonly=True)
    mts_request_id = fields.Char(string="MTS Request ID", readonly=True)
    mts_status = fields.Char(string="MTS Status", readonly=True)
    mts_endpoint = fields.Char(string="MTS Endpoint", readonly=True)
    records_expected = fields.Integer(readonly=True)
    records_sent = fields.Integer(readonly=True)
    pages_done = fields.Integer(readonly=True)
    records_received = fields.Integer(readonly=True)
    records_delivered = fields.Integer(readonly=True)
    records_failed = fields.Integer(readonly=True)
    retry_of_name = fields.Char(string="Retry Of", readonly=True)
    error_code = fields.Char(readonly=True)
    error_message = fields.Text(readonly=True)
    service_create_date = fields.Datetime(string="Queued on", readonly=True)
    done_date = fields.Datetime(string="Done on", readonly=True)

    def action_cancel(self):
        """Cancels these queued or retrying runs in the service, whatever the connector's
        job status; the service refuses (a warning) runs MTS has taken already."""
        self.mapped("connector_id")._check_may_act()
        if self:
            self.env["mts.connector.service"].call("mts.connector.run", "action_cancel", [self.mapped("service_id")])
        return {
            "type": "ir.actions.client",
            "tag": "display_notification",
            "params": {
                "title": _("MTS Connector"),
                "message": _("Run cancelled."),
                "type": "success",
                "sticky": False,
                "next": {"type": "ir.actions.client", "tag": "soft_reload"},
            },
        }
