# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""The ``mts.connector`` model: the OpenG2P screens in front of the service.

Every decision and every outside call belongs to the connector service. This
model keeps a local copy of each connector's configuration (so a service that
lost its data is repopulated by the synchronisation job), forwards every
change to the service *before* storing it, and reads the job state from the
service, one call per recordset.
"""

import json
import logging

from odoo import _, api, fields, models
from odoo.exceptions import UserError, ValidationError

from .. import service_errors
from ..exceptions import to_odoo
from .connector_spec import (
    AUTH_TYPES,
    CALLBACK_MODES,
    DEFAULT_G2P_DOMAIN,
    DEFAULT_G2P_FIELDS,
    DEFAULT_VID_DELETE_DOMAIN,
    DEFAULT_MAPPING,
    DEFAULT_MTS_URL,
    DELIVERY_TARGETS,
    DELIVERY_TYPES,
    FAILED_DELIVERIES_LISTED,
    HTTP_METHODS,
    INPUT_TYPES,
    JOB_STATUS,
    JOB_TYPES,
    LAST_RUN_FIELDS,
    LOCAL_ONLY,
    OPEN_RUN_STATES,
    OUTPUT_TYPES,
    RECENT_RUNS,
    RUN_STATES,
    RUNS_LISTED,
    SECRET_FIELDS,
    SERVICE_FIELDS,
    SERVICE_MODEL,
    STATE_FIELDS,
    service_value,
)

_logger = logging.getLogger(__name__)


class MtsConnector(models.Model):
    _name = "mts.connector"
    _inherit = ["mts.connector.sync"]
    _description = "Mosip Token Seeder Connectors"
    _order = "name, id"

    # -- the link to the service ---------------------------------------------------
    service_id = fields.Integer(
        string="Service ID",
        readonly=True,
        copy=False,
        index=True,
        help="The id of this connector in the connector service.",
    )
    service_create_date = fields.Char(
        string="Created in Service on",
        readonly=True,
        copy=False,
        help="Tells this connector apart from another that got the same id after the service lost its data.",
    )
    service_message = fields.Char(
        compute="_compute_service_state",
        help="Why the state shown does not come from the service.",
    )

    # -- the fields of the service's connector (same names, labels, defaults) ------
    name = fields.Char(required=True)
    mts_url = fields.Char(
        string="URL to reach MTS",
        required=True,
        default=DEFAULT_MTS_URL,
        help="One MTS base URL, or several separated by commas (e.g. the pods of an MTS StatefulSet): "
        "requests go to the least busy one that is up, and each is tracked where it went.",
    )
    input_type = fields.Selection(INPUT_TYPES, string="MTS Input Type", required=True)
    mapping = fields.Text(required=True, default=DEFAULT_MAPPING)
    output_type = fields.Selection(OUTPUT_TYPES, string="MTS Output Type", required=True, default="json")
    output_format = fields.Text(
        string="MTS Output Format",
        help="A jq program applied to {input, output}.",
    )
    delivery_type = fields.Selection(
        DELIVERY_TYPES,
        string="MTS Delivery Type",
        required=True,
        default="callback",
    )
    lang_code = fields.Char(string="Mosip Language", required=True, default="eng")
    job_status = fields.Selection(
        JOB_STATUS,
        compute="_compute_service_state",
        search="_search_job_status",
        help="Kept by the connector service: Start, Stop and Restart change it there.",
    )
    is_recurring = fields.Selection(JOB_TYPES, string="Job Type", required=True)
    cron_id = fields.Many2one(
        "ir.cron",
        string="Cron Job",
        readonly=True,
        copy=False,
        ondelete="set null",
        help="Kept for parity; the service schedules runs itself, so this is always empty.",
    )
    start_datetime = fields.Datetime(string="Start Time")
    end_datetime = fields.Datetime(string="End Time")
    interval_minutes = fields.Integer(string="Interval in minutes")
    cron_expression = fields.Char(
        string="Cron Expression (UTC)",
        help='Overrides the interval, e.g. "0 2 * * *" for daily at 02:00 UTC.',
    )
    settle_seconds = fields.Integer(
        string="Settle Delay (s)",
        default=120,
        help="A window ends this long before now, so late-committed ODK submissions are not missed.",
    )
    mts_timeout = fields.Integer(string="MTS Timeout (s)", default=300)
    max_records_per_request = fields.Integer(string="Max Records per MTS Request", default=500)
    mts_max_parallel = fields.Integer(
        string="Parallel MTS Requests",
        default=4,
        help="Requests of this connector in MTS at once: the parts of a split window, "
        "the windows of an import, the pages of a registry walk.",
    )
    odk_base_url = fields.Char(string="ODK Base URL")
    odk_odata_url = fields.Char(string="ODK OData URL")
    odk_email = fields.Char(string="ODK Email")
    odk_password = fields.Char(string="ODK Password", compute="_compute_secret_fields", readonly=False)
    callback_url = fields.Char(string="Callback URL")
    callback_httpmethod = fields.Selection(HTTP_METHODS, string="Callback HTTP Method", default="POST")
    callback_timeout = fields.Integer(default=10)
    callback_authtype = fields.Selection(AUTH_TYPES, string="Callback Auth Type", default="odoo")
    callback_mode = fields.Selection(CALLBACK_MODES, default="direct")
    delivery_target = fields.Selection(
        DELIVERY_TARGETS,
        default="http",
        help="Relay mode: 'HTTP callback' sends each record to the Callback URL; 'Registry' writes each "
        "token into the registry (Registry Odoo URL) as the registrant's UIN Token ID Type id, "
        "created or updated, with no REST addon.",
    )
    callback_in_bulk = fields.Boolean(
        string="Callbacks in Bulk",
        default=False,
        help="MTS sends all records of a request in one call (callInBulk) instead of one call per record.",
    )
    callback_extra_headers = fields.Text(
        compute="_compute_secret_fields",
        readonly=False,
        help="JSON object of header name -> value, added to every callback. Write-only, like the "
        "passwords: it may hold credentials (e.g. HTTP Basic); leave it empty to keep the saved one.",
    )
    callback_auth_url = fields.Char(string="Callback Auth URL")
    callback_auth_database = fields.Char()
    callback_auth_username = fields.Char()
    callback_auth_password = fields.Char(compute="_compute_secret_fields", readonly=False)
    callback_auth_client_id = fields.Char(string="Callback Auth Client ID")
    callback_auth_client_secret = fields.Char(compute="_compute_secret_fields", readonly=False)
    callback_auth_token = fields.Char(compute="_compute_secret_fields", readonly=False)
    g2p_search_domain = fields.Text(string="Search Domain", default=DEFAULT_G2P_DOMAIN)
    g2p_selected_fields = fields.Text(string="Selected Fields", default=DEFAULT_G2P_FIELDS)
    odoo_url = fields.Char(string="Registry Odoo URL")
    odoo_database = fields.Char(string="Registry Odoo Database")
    odoo_username = fields.Char(string="Registry Odoo Username")
    odoo_password = fields.Char(
        string="Registry Odoo Password or API Key",
        compute="_compute_secret_fields",
        readonly=False,
    )
    vid_id_type = fields.Char(
        string="VID ID Type",
        default=lambda self: self.env["mts.connector.service"]._setting("vid_id_type"),
        help="Set for every connector in Settings > MTS Connector.",
    )
    uin_token_id_type = fields.Char(
        string="UIN Token ID Type",
        default=lambda self: self.env["mts.connector.service"]._setting("uin_token_id_type"),
        help="Set for every connector in Settings > MTS Connector.",
    )
    delete_vid_after_token = fields.Boolean(
        string="Delete MOSIP VID Ids",
        default=False,
        help="Registry input: delete a registrant's VID id once it holds a non-empty UIN token id "
        "(the g2p_mts clean-up job).",
    )
    vid_delete_interval_minutes = fields.Integer(string="VID Clean-up Interval (minutes)", default=5)
    vid_delete_search_domain = fields.Text(
        string="VID Clean-up Domain",
        default=DEFAULT_VID_DELETE_DOMAIN,
        help="Odoo domain on res.partner: the registrants the VID clean-up looks at.",
    )
    next_run_at = fields.Datetime(string="Next Run", compute="_compute_service_state")
    has_open_run = fields.Boolean(
        compute="_compute_service_state",
        help="A run is queued, submitted or retrying: Run now is hidden until it ends.",
    )

    # -- secrets: whether set, and Odoo's copy -----------------------------------------
    secret_values = fields.Text(
        groups="base.group_system",
        copy=False,
        help="JSON object of the secret fields' values, to repopulate the service.",
    )
    odk_password_set = fields.Boolean(string="ODK Password Set", compute="_compute_secret_fields")
    callback_extra_headers_set = fields.Boolean(string="Extra Headers Set", compute="_compute_secret_fields")
    callback_auth_password_set = fields.Boolean(compute="_compute_secret_fields")
    callback_auth_client_secret_set = fields.Boolean(compute="_compute_secret_fields")
    callback_auth_token_set = fields.Boolean(compute="_compute_secret_fields")
    odoo_password_set = fields.Boolean(string="Registry Odoo Password Set", compute="_compute_secret_fields")

    # -- the last run, and the lists read from the service -------------------------
    last_run_name = fields.Char(string="Last Run", compute="_compute_service_state")
    last_run_state = fields.Selection(RUN_STATES, compute="_compute_service_state")
    last_run_window_start = fields.Datetime(compute="_compute_service_state")
    last_run_window_end = fields.Datetime(compute="_compute_service_state")
    last_run_mts_status = fields.Char(string="Last Run MTS Status", compute="_compute_service_state")
    last_run_error = fields.Text(compute="_compute_service_state")
    run_ids = fields.Many2many(
        "mts.connector.run",
        string="Recent Runs",
        compute="_compute_run_ids",
    )
    failed_delivery_ids = fields.Many2many(
        "mts.connector.delivery",
        string="Failed Deliveries",
        compute="_compute_failed_delivery_ids",
    )
    failed_delivery_count = fields.Integer(compute="_compute_failed_delivery_ids")

    # -- reading the service ---------------------------------------------------------------

    @api.constrains("service_id")
    def _check_service_id_unique(self):
        for rec in self.filtered("service_id"):
            if self.search_count([("service_id", "=", rec.service_id), ("id", "!=", rec.id)]):
                raise ValidationError(
                    _(
                        "Two connectors cannot stand for the same connector of the service (service id %s).",
                        rec.service_id,
                    )
                )

    def _service(self):
        return self.env["mts.connector.service"]

    def _linked(self):
        """The records of ``self`` the service knows (saved, with a service id)."""
        return self.filtered(lambda rec: rec.id and isinstance(rec.id, int) and rec.service_id)

    @api.depends("service_id")
    def _compute_service_state(self):
        for rec in self:
            for fname in STATE_FIELDS:
                rec[fname] = False
            if rec._linked():
                continue
            if isinstance(rec.id, int):
                rec.job_status = "draft"
                rec.service_message = _("Not in the connector service yet; the synchronisation job will push it.")
            elif not rec._origin:
                rec.job_status = "draft"  # a connector being created
        linked = self._linked()
        if not linked:
            return
        try:
            rows = self._service()._call_raw(
                SERVICE_MODEL,
                "search_read",
                [[["id", "in", linked.mapped("service_id")]]],
                {"fields": ["job_status", "next_run_at", "last_run_id"]},
            )
            open_runs = self._service()._call_raw(
                "mts.connector.run",
                "search_read",
                [[["connector_id", "in", linked.mapped("service_id")], ["state", "in", OPEN_RUN_STATES]]],
                {"fields": ["connector_id"]},
            )
            busy = {run["connector_id"][0] for run in open_runs if run.get("connector_id")}
            by_sid = {row["id"]: row for row in rows}
            run_ids = [row["last_run_id"][0] for row in rows if row.get("last_run_id")]
            runs = {}
            if run_ids:
                runs = {
                    run["id"]: run
                    for run in self._service()._call_raw(
                        "mts.connector.run",
                        "search_read",
                        [[["id", "in", run_ids]]],
                        {"fields": LAST_RUN_FIELDS},
                    )
                }
        except service_errors.ServiceError as err:
            # A list must still open when the service is down: say why instead.
            for rec in linked:
                rec.service_message = err.message
            return
        states = dict(RUN_STATES)
        for rec in linked:
            row = by_sid.get(rec.service_id)
            if row is None:
                rec.service_message = _(
                    "The connector service does not have this connector (any more); "
                    "the synchronisation job will push it again."
                )
                continue
            rec.job_status = row.get("job_status") or False
            rec.next_run_at = row.get("next_run_at") or False
            rec.has_open_run = rec.service_id in busy
            run = runs.get(row["last_run_id"][0]) if row.get("last_run_id") else None
            if run:
                rec.last_run_name = run.get("name") or False
                rec.last_run_state = run.get("state") if run.get("state") in states else False
                rec.last_run_window_start = run.get("window_start") or False
                rec.last_run_window_end = run.get("window_end") or False
                rec.last_run_mts_status = run.get("mts_status") or False
                rec.last_run_error = run.get("error_message") or False

    def _search_job_status(self, operator, value):
        if operator not in ("=", "!=", "in", "not in"):
            raise UserError(_("Job status can only be searched with =, !=, in and not in."))
        if isinstance(value, tuple):
            value = list(value)
        ids = self._service().call(SERVICE_MODEL, "search", [[["job_status", operator, value]]])
        return [("service_id", "in", ids or [])]

    def _secrets(self):
        self.ensure_one()
        try:
            secrets = json.loads(self.sudo().secret_values or "{}")
        except ValueError:
            secrets = {}
        return secrets if isinstance(secrets, dict) else {}

    @api.depends("secret_values")
    def _compute_secret_fields(self):
        for rec in self:
            origin = rec._origin  # the saved record behind a form's onchange
            secrets = origin._secrets() if origin else {}
            for fname in SECRET_FIELDS:
                rec[fname] = False
                rec[f"{fname}_set"] = bool(secrets.get(fname))

    def _compute_run_ids(self):
        linked = self._linked()
        runs = self.env["mts.connector.run"]
        try:
            if linked:
                runs = runs._fetch(linked, limit=RECENT_RUNS * len(linked), raw=True)
        except service_errors.ServiceError as err:
            _logger.info("runs not shown: %s", err.__class__.__name__)
        for rec in self:
            rec.run_ids = runs.filtered(lambda run, rec=rec: run.connector_id == rec)[:RECENT_RUNS]

    def _compute_failed_delivery_ids(self):
        linked = self._linked()
        deliveries = self.env["mts.connector.delivery"]
        try:
            if linked:
                deliveries = deliveries._fetch(
                    linked,
                    extra_domain=[["state", "=", "failed"]],
                    limit=FAILED_DELIVERIES_LISTED * len(linked),
                    raw=True,
                )
        except service_errors.ServiceError as err:
            _logger.info("failed deliveries not shown: %s", err.__class__.__name__)
        for rec in self:
            mine = deliveries.filtered(lambda delivery, rec=rec: delivery.connector_id == rec)
            rec.failed_delivery_ids = mine
            rec.failed_delivery_count = len(mine)

    def _invalidate_service_state(self):
        self.invalidate_recordset(list(STATE_FIELDS) + ["run_ids", "failed_delivery_ids", "failed_delivery_count"])

    # -- writing to the service ------------------------------------------------------

    @api.model
    def _service_vals(self, vals):
        """The part of ``vals`` the service takes, converted for it."""
        return {name: service_value(vals[name]) for name in SERVICE_FIELDS if name in vals}

    @api.model
    def _split_secrets(self, vals):
        """``vals`` without the secret fields, and the secrets apart."""
        local = {k: v for k, v in vals.items() if k not in SECRET_FIELDS}
        secrets = {k: v for k, v in vals.items() if k in SECRET_FIELDS}
        return local, secrets

    def _store_secrets(self, secrets):
        """Merges written secrets into Odoo's copy (a false value clears one)."""
        if not secrets:
            return
        for rec in self:
            merged = rec._secrets()
            for name, value in secrets.items():
                if value:
                    merged[name] = value
                else:
                    merged.pop(name, None)
            rec.sudo().secret_values = json.dumps(merged, sort_keys=True) if merged else False

    def _local_service_vals(self):
        """This connector's whole configuration as the service takes it."""
        self.ensure_one()
        secrets = self._secrets()
        vals = {}
        for name in SERVICE_FIELDS:
            if name in SECRET_FIELDS:
                vals[name] = secrets.get(name) or False
            else:
                vals[name] = service_value(self[name])
        return vals

    def _service_ids(self):
        """The service ids of ``self``, pushing first the records it lacks."""
        missing = self.filtered(lambda rec: not rec.service_id)
        if missing:
            missing._push_to_service()
        return self.mapped("service_id")

    @api.model_create_multi
    def create(self, vals_list):
        if self.env.context.get(LOCAL_ONLY):
            splits = [self._split_secrets(vals) for vals in vals_list]
            records = super().create([local for local, _secrets in splits])
            for rec, (_local, secrets) in zip(records, splits, strict=True):
                rec._store_secrets(secrets)
            return records
        # Refuse before the service is asked, not after it took the connector.
        self.check_access_rights("create")
        full_list = [self._add_missing_default_values(dict(vals)) for vals in vals_list]
        service_ids = self._service().call(
            SERVICE_MODEL, "create", [[self._service_vals(vals) for vals in full_list]]
        )
        local_list, secrets_list = [], []
        for vals, service_id in zip(full_list, service_ids, strict=True):
            local, secrets = self._split_secrets(vals)
            local["service_id"] = service_id
            local_list.append(local)
            secrets_list.append(secrets)
        try:
            records = super(MtsConnector, self.with_context(**{LOCAL_ONLY: True})).create(local_list)
            for rec, secrets in zip(records, secrets_list, strict=True):
                rec._store_secrets(secrets)
            records._remember_service_create_dates()
        except Exception:
            self._forget_in_service(service_ids)
            raise
        return records.with_env(self.env)

    def write(self, vals):
        if self.env.context.get(LOCAL_ONLY):
            local, secrets = self._split_secrets(vals)
            result = super().write(local) if local else True
            self._store_secrets(secrets)
            return result
        payload = self._service_vals(vals)
        if payload and self:
            self._check_may_act()
            service_ids = self._service_ids()
            self._service().call(SERVICE_MODEL, "write", [service_ids, payload])
        local, secrets = self._split_secrets(vals)
        result = super().write(local) if local else True
        self._store_secrets(secrets)
        return result

    @api.ondelete(at_uninstall=False)
    def _unlink_except_running(self):
        running = self.filtered(lambda rec: rec.job_status in ("started", "running"))
        if running:
            raise UserError(
                _(
                    "Stop these connectors before deleting them: %s",
                    ", ".join(running.mapped("name")),
                )
            )

    @api.ondelete(at_uninstall=False)
    def _unlink_in_service(self):
        """Deletes the connectors in the service first (not when the addon is uninstalled)."""
        if self.env.context.get(LOCAL_ONLY):
            return
        self._unlink_except_running()
        service_ids = [sid for sid in self.mapped("service_id") if sid]
        if not service_ids:
            return
        try:
            self._service()._call_raw(SERVICE_MODEL, "unlink", [service_ids])
        except service_errors.ServiceMissingError:
            # Some are gone from the service already: delete the others.
            existing = self._service().call(SERVICE_MODEL, "search", [[["id", "in", service_ids]]])
            if existing:
                self._service().call(SERVICE_MODEL, "unlink", [existing])
        except service_errors.ServiceError as err:
            raise to_odoo(err) from err

    def copy(self, default=None):
        self.ensure_one()
        if self.env.context.get(LOCAL_ONLY):
            return super().copy(default)
        self.check_access_rights("create")
        default = dict(default or {})
        default.setdefault("name", _("%s (copy)", self.name))
        (service_id,) = self._service_ids()
        new_service_id = self._service().call(
            SERVICE_MODEL, "copy", [service_id], {"default": self._service_vals(default)}
        )
        local, secrets = self._split_secrets(default)
        local["service_id"] = new_service_id
        try:
            new = super(MtsConnector, self.with_context(**{LOCAL_ONLY: True})).copy(local)
            new._store_secrets(dict(self._secrets(), **secrets))
            new._remember_service_create_dates()
        except Exception:
            self._forget_in_service([new_service_id])
            raise
        return new.with_env(self.env)

    # -- actions ---------------------------------------------------------------------------

    def _check_may_act(self):
        self.check_access_rights("write")
        self.check_access_rule("write")

    def _job_action(self, method):
        self._check_may_act()
        if self:
            self._service().call(SERVICE_MODEL, method, [self._service_ids()])
            self._invalidate_service_state()
        return True

    def action_start(self):
        return self._job_action("action_start")

    def action_stop(self):
        return self._job_action("action_stop")

    def action_restart(self):
        return self._job_action("action_restart")

    def mts_action_trigger(self):
        """Start, or stop, as the one button of the original addon did."""
        return self._job_action("mts_action_trigger")

    def _notify(self, message, kind="success", reload=True):
        params = {"title": _("MTS Connector"), "message": message, "type": kind, "sticky": False}
        if reload:
            params["next"] = {"type": "ir.actions.client", "tag": "soft_reload"}
        return {"type": "ir.actions.client", "tag": "display_notification", "params": params}

    def action_run_now(self):
        self._check_may_act()
        self._service().call(SERVICE_MODEL, "action_run_now", [self._service_ids()])
        self._invalidate_service_state()
        return self._notify(_("A run was queued for: %s", ", ".join(self.mapped("name"))))

    def action_retry_failed(self):
        self._check_may_act()
        self._service().call(SERVICE_MODEL, "action_retry_failed", [self._service_ids()])
        self._invalidate_service_state()
        return self._notify(_("The failed deliveries will be retried."))

    def action_push_to_service(self):
        self._check_may_act()
        summary = self._push_to_service()
        return self._notify(
            _(
                "Connector service up to date (created: %(created)s, updated: %(updated)s).",
                created=len(summary["created"]),
                updated=len(summary["updated"]),
            ),
            reload=False,
        )

    def _show_report(self, title, report):
        wizard = self.env["mts.connector.report"].create({"name": title, "report": report})
        return {
            "type": "ir.actions.act_window",
            "name": title,
            "res_model": "mts.connector.report",
            "res_id": wizard.id,
            "view_mode": "form",
            "target": "new",
        }

    def action_test_connection(self):
        self._check_may_act()
        report = self._service().call(SERVICE_MODEL, "action_test_connection", [self._service_ids()])
        return self._show_report(_("Test connection"), str(report or ""))

    def action_preview_mts_request(self):
        self._check_may_act()
        preview = self._service().call(SERVICE_MODEL, "preview_mts_request", [self._service_ids()])
        return self._show_report(_("MTS request (secrets masked)"), json.dumps(preview, indent=2))

    def action_open_import_wizard(self):
        self._check_may_act()
        return {
            "type": "ir.actions.act_window",
            "name": _("Import a date range"),
            "res_model": "mts.connector.import.wizard",
            "view_mode": "form",
            "target": "new",
            "context": {"default_connector_ids": [(6, 0, self.ids)]},
        }

    def action_view_runs(self):
        runs = self.env["mts.connector.run"]._fetch(self._linked(), limit=RUNS_LISTED)
        return {
            "type": "ir.actions.act_window",
            "name": _("Runs"),
            "res_model": "mts.connector.run",
            "view_mode": "tree,form",
            "domain": [("id", "in", runs.ids)],
            "context": {"create": False, "edit": False, "delete": False},
        }

    def action_view_failed_deliveries(self):
        deliveries = self.env["mts.connector.delivery"]._fetch(
            self._linked(),
            extra_domain=[["state", "=", "failed"]],
            limit=FAILED_DELIVERIES_LISTED,
        )
        return {
            "type": "ir.actions.act_window",
            "name": _("Failed deliveries"),
            "res_model": "mts.connector.delivery",
            "view_mode": "tree,form",
            "domain": [("id", "in", deliveries.ids)],
            "context": {"create": False, "edit": False, "delete": False},
        }
