# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""Keeping the service's connectors equal to Odoo's.

Odoo keeps the whole configuration of each connector; the scheduled action
pushes it wherever the service differs (a service that lost its data is
filled again) and reports the connectors the service has but Odoo does not.
It never runs an import: the service's own scheduler does the timing.
"""

import json
import logging
from collections import defaultdict

from odoo import api, models
from odoo.exceptions import AccessDenied, UserError

from .. import service_errors
from ..exceptions import ConnectorServiceUnreachable
from .connector_spec import LOCAL_ONLY, SECRET_FIELDS, SERVICE_FIELDS, SERVICE_MODEL, same_value

_logger = logging.getLogger(__name__)


class MtsConnectorSync(models.AbstractModel):
    _name = "mts.connector.sync"
    _description = "MTS Connector Synchronisation with the Service"

    def _remember_service_create_dates(self):
        """Keeps the service's ``create_date`` of each connector (one call)."""
        rows = self._service().call(
            SERVICE_MODEL,
            "search_read",
            [[["id", "in", self.mapped("service_id")]]],
            {"fields": ["create_date"]},
        )
        dates = {row["id"]: row.get("create_date") or False for row in rows}
        for rec in self.with_context(**{LOCAL_ONLY: True}):
            rec.service_create_date = dates.get(rec.service_id, False)

    @api.model
    def _forget_in_service(self, service_ids):
        """Best effort: deletes connectors Odoo failed to store after the service took them."""
        try:
            self._service()._call_raw(SERVICE_MODEL, "unlink", [list(service_ids)])
        except service_errors.ServiceError as err:
            _logger.warning(
                "connector service ids %s were not deleted after a failed Odoo write (%s); "
                "the synchronisation job reports them",
                list(service_ids),
                err.__class__.__name__,
            )

    def _push_to_service(self):
        """Makes the service hold this recordset's configuration.

        Connectors the service lacks (never pushed, or lost with its data) are
        created in one call; the others get, in one call per set of changes, the
        values that differ. Returns ``{"created": [...], "updated": [...]}`` (Odoo ids).
        """
        service = self._service()
        records = self.with_context(**{LOCAL_ONLY: True})
        remote = {}
        linked = records.filtered("service_id")
        if linked:
            rows = service.call(
                SERVICE_MODEL,
                "search_read",
                [[["id", "in", linked.mapped("service_id")]]],
                {"fields": list(SERVICE_FIELDS) + ["create_date"]},
            )
            remote = {row["id"]: row for row in rows}
        to_create = records.filtered(lambda rec: not rec._matches(remote.get(rec.service_id)))
        created = to_create._create_in_service() if to_create else to_create
        changes = defaultdict(list)
        for rec in records - to_create:
            diff = rec._diff(remote[rec.service_id])
            if diff:
                changes[json.dumps(diff, sort_keys=True)].append(rec)
        updated = records.browse()
        for key, recs in changes.items():
            service.call(SERVICE_MODEL, "write", [[rec.service_id for rec in recs], json.loads(key)])
            for rec in recs:
                updated |= rec
        if created or updated:
            _logger.info(
                "pushed connectors to the service: created %s, updated %s",
                created.ids,
                updated.ids,
            )
        self._invalidate_service_state()
        return {"created": created.ids, "updated": updated.ids}

    def _create_in_service(self):
        """Creates ``self`` in the service (one call) and keeps the new ids.

        When the service refuses the batch, each connector is tried alone so one
        it now finds invalid does not keep the others out. Returns those created.
        """
        service = self._service()
        try:
            new_ids = service.call(SERVICE_MODEL, "create", [[rec._local_service_vals() for rec in self]])
            pairs = list(zip(self, new_ids, strict=True))
        except UserError as err:
            if len(self) == 1 or isinstance(err, AccessDenied | ConnectorServiceUnreachable):
                raise
            pairs = []
            for rec in self:
                try:
                    (new_id,) = service.call(SERVICE_MODEL, "create", [[rec._local_service_vals()]])
                except UserError as one_err:
                    _logger.warning("connector %s was not pushed to the service: %s", rec.id, one_err)
                    continue
                pairs.append((rec, new_id))
        created = self.browse([rec.id for rec, _new_id in pairs])
        # Two steps, so no two records hold the same service id on the way.
        created.write({"service_id": 0})
        for rec, new_id in pairs:
            rec.service_id = new_id
        if created:
            created._remember_service_create_dates()
        return created

    def _matches(self, row):
        """Whether the service's ``row`` is this connector (same id *and* creation)."""
        self.ensure_one()
        if not row:
            return False
        return not self.service_create_date or self.service_create_date == row.get("create_date")

    def _diff(self, row):
        """The values the service must get to match this connector."""
        self.ensure_one()
        diff = {}
        local = self._local_service_vals()
        for name in SERVICE_FIELDS:
            if name in SECRET_FIELDS:
                # The service answers secrets masked: only set/unset can differ.
                if bool(local[name]) != bool(row.get(name)):
                    diff[name] = local[name]
            elif not same_value(local[name], row.get(name, False)):
                diff[name] = local[name]
        return diff

    @api.model
    def _cron_sync_with_service(self):
        """Scheduled: pushes every connector to the service, reports the service's extras.

        Never runs an import: the service's own scheduler does the timing.
        """
        connectors = self.search([])
        try:
            summary = connectors._push_to_service()
            service_ids = self._service().call(SERVICE_MODEL, "search", [[]])
        except UserError as err:
            _logger.warning("connector synchronisation skipped: %s", err)
            return {"error": str(err)}
        known = set(connectors.mapped("service_id"))
        extra = sorted(set(service_ids or []) - known)
        if extra:
            _logger.warning(
                "the connector service has %d connector(s) this Odoo does not know: service ids %s",
                len(extra),
                extra,
            )
        summary["unknown_service_ids"] = extra
        return summary
