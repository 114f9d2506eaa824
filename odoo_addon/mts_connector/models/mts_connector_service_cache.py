# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""Short-lived local copies of records the service keeps (runs, deliveries).

The service owns runs and deliveries; Odoo shows them through transient
records that are replaced on every fetch (one ``search_read`` for a whole
recordset of connectors) and vacuumed by Odoo. Each user sees their own copy.
"""

from odoo import api, fields, models


class MtsConnectorServiceCache(models.AbstractModel):
    _name = "mts.connector.service.cache"
    _description = "Local Copy of Connector Service Records"

    service_id = fields.Integer(string="Service ID", readonly=True, index=True)
    connector_id = fields.Many2one(
        "mts.connector",
        readonly=True,
        index=True,
        ondelete="cascade",
    )

    #: service field -> local field, for the model that inherits this one.
    _service_field_map = {}

    @api.model
    def _fetch(self, connectors, extra_domain=None, limit=None, raw=False):
        """Replaces the local copy of ``connectors``' records by the service's, newest first.

        ``raw`` lets ``service_errors.ServiceError`` through (for computed
        fields, which show a message instead of failing).
        """
        service = self.env["mts.connector.service"]
        domain = [["connector_id", "in", connectors.mapped("service_id")]] + list(extra_domain or [])
        kwargs = {"fields": list(self._service_field_map), "order": "id desc"}
        if limit:
            kwargs["limit"] = limit
        call = service._call_raw if raw else service.call
        rows = call(self._name, "search_read", [domain], kwargs)
        return self._replace(connectors, rows or [])

    @api.model
    def _replace(self, connectors, rows):
        by_service_id = {connector.service_id: connector.id for connector in connectors}
        cache = self.sudo()
        cache.search([("connector_id", "in", connectors.ids), ("create_uid", "=", self.env.uid)]).unlink()
        vals_list = []
        for row in rows:
            vals = {"service_id": row["id"]}
            for remote, local in self._service_field_map.items():
                value = row.get(remote, False)
                if remote == "connector_id":
                    vals[local] = by_service_id.get(value[0]) if value else False
                else:
                    vals[local] = self._local_value(local, value)
            vals_list.append(vals)
        return cache.create(vals_list).with_env(self.env)

    @api.model
    def _local_value(self, fname, value):
        field = self._fields[fname]
        if field.type == "selection":
            return value if value in dict(field.selection) else False
        if field.type == "integer":
            return value if isinstance(value, int) and not isinstance(value, bool) else 0
        if isinstance(value, list):
            # A many2one of the service: [id, display_name].
            return value[1] if len(value) > 1 else False
        return value or False
