# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""Where the connector service's settings are read and every call goes out."""

import os

from odoo import _, api, models

from .. import client, service_errors
from ..exceptions import to_odoo

#: setting -> (environment variable, ir.config_parameter key, default). The
#: environment of the Odoo server wins over the Settings screen, so a
#: deployment can keep the API key out of the database.
SETTINGS = {
    "url": ("MTS_CONNECTOR_URL", "mts_connector.service_url", "http://localhost:8070"),
    "db": ("MTS_CONNECTOR_DB", "mts_connector.service_db", "mts_connector"),
    "login": ("MTS_CONNECTOR_LOGIN", "mts_connector.service_login", "admin"),
    "api_key": ("MTS_CONNECTOR_API_KEY", "mts_connector.service_api_key", ""),
    "timeout": ("MTS_CONNECTOR_TIMEOUT", "mts_connector.service_timeout", "30"),
    "vid_id_type": ("MTS_CONNECTOR_VID_ID_TYPE", "mts_connector.vid_id_type", "MOSIP VID"),
    "uin_token_id_type": (
        "MTS_CONNECTOR_UIN_TOKEN_ID_TYPE",
        "mts_connector.uin_token_id_type",
        "MOSIP UIN TOKEN",
    ),
}


class MtsConnectorService(models.AbstractModel):
    _name = "mts.connector.service"
    _description = "MTS Connector Service Client"

    @api.model
    def _setting(self, name, overrides=None):
        """A setting: environment variable, else ``overrides``, else parameter, else default."""
        env_var, param, default = SETTINGS[name]
        value = os.environ.get(env_var)
        if not value and overrides is not None:
            value = overrides.get(name)
        if not value and overrides is None:
            value = self.env["ir.config_parameter"].sudo().get_param(param, default)
        return str(value) if value else default

    @api.model
    def _get_client(self, overrides=None):
        """A client configured from the environment or the Settings screen.

        ``overrides`` (a dict of ``SETTINGS`` keys) replaces the stored
        parameters, to test values not saved yet.
        """
        api_key = self._setting("api_key", overrides)
        if not api_key:
            raise service_errors.ServiceNotConfigured(
                _(
                    "No API key is set for the connector service: set it in "
                    "Settings > MTS Connector (or in MTS_CONNECTOR_API_KEY)."
                )
            )
        try:
            timeout = float(self._setting("timeout", overrides))
        except ValueError:
            timeout = client.DEFAULT_TIMEOUT
        return client.ServiceClient(
            self._setting("url", overrides),
            self._setting("db", overrides),
            self._setting("login", overrides),
            api_key,
            timeout=timeout,
        )

    @api.model
    def _call_raw(self, model, method, args=None, kwargs=None):
        """Calls the service; failures raise ``service_errors.ServiceError``."""
        return self._get_client().execute_kw(model, method, args or [], kwargs or {})

    @api.model
    def call(self, model, method, args=None, kwargs=None):
        """Calls ``model.method`` in the service; failures raise the matching Odoo exception.

        Give it a whole recordset's ids at once: every service method takes a list.
        """
        try:
            return self._call_raw(model, method, args, kwargs)
        except service_errors.ServiceError as err:
            raise to_odoo(err) from err

    @api.model
    def check(self, overrides=None):
        """Reaches the service and logs in; returns ``{"url", "version"}`` or raises."""
        try:
            service = self._get_client(overrides)
            version = service.version()
            service.authenticate()
        except service_errors.ServiceError as err:
            raise to_odoo(err) from err
        return {"url": service.safe_url, "version": version}
