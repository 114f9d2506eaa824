# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""Errors of the connector service client, with no Odoo import.

The client (``client.py``) raises these; ``exceptions.py`` maps them onto
``odoo.exceptions`` where Odoo is importable. Each class names the Odoo
exception it stands for, so the mapping is one table and tests without Odoo can
check which class a service error gives.

Messages never hold a secret: they are the service's own message (which the
service builds from field names, ids and states) or a sentence built here from
the service URL with any user:password part removed.
"""


class ServiceError(Exception):
    """Any failure of a call to the connector service (maps to ``UserError``).

    ``remote_name`` is the exception path the service sent in ``data.name``
    (e.g. ``builtins.AttributeError``), empty when the failure was local.
    """

    odoo_exception = "UserError"

    def __init__(self, message, remote_name="", code=None):
        super().__init__(message)
        self.message = message
        self.remote_name = remote_name
        self.code = code

    def __str__(self):
        return self.message


class ServiceValidationError(ServiceError):
    """The service refused field values (``odoo.exceptions.ValidationError``)."""

    odoo_exception = "ValidationError"


class ServiceUserError(ServiceError):
    """The action is not allowed now (``odoo.exceptions.UserError``)."""

    odoo_exception = "UserError"


class ServiceAccessDenied(ServiceError):
    """Wrong database, login or API key (``odoo.exceptions.AccessDenied``)."""

    odoo_exception = "AccessDenied"


class ServiceAccessError(ServiceError):
    """The service does not allow this operation (``odoo.exceptions.AccessError``)."""

    odoo_exception = "AccessError"


class ServiceMissingError(ServiceError):
    """A record does not exist in the service (``odoo.exceptions.MissingError``)."""

    odoo_exception = "MissingError"


class ServiceUnreachable(ServiceError):
    """Connection refused, name not resolved or timeout (``UserError``)."""

    odoo_exception = "UserError"


class ServiceNotConfigured(ServiceError):
    """Odoo has no URL or API key for the service (``UserError``)."""

    odoo_exception = "UserError"


class ServiceProtocolError(ServiceError):
    """The answer was not Odoo JSON-RPC (wrong URL, proxy error page, ...)."""

    odoo_exception = "UserError"


#: ``data.name`` of an Odoo-shaped error -> the class raised for it. Anything
#: else (``builtins.AttributeError`` for a method the service does not have
#: yet, ``builtins.ValueError``, ...) raises the base ``ServiceError``.
REMOTE_ERRORS = {
    "odoo.exceptions.ValidationError": ServiceValidationError,
    "odoo.exceptions.UserError": ServiceUserError,
    "odoo.exceptions.AccessDenied": ServiceAccessDenied,
    "odoo.exceptions.AccessError": ServiceAccessError,
    "odoo.exceptions.MissingError": ServiceMissingError,
    "odoo.http.SessionExpiredException": ServiceAccessDenied,
}


def from_remote(error):
    """The exception for the ``error`` member of a JSON-RPC answer."""
    if not isinstance(error, dict):
        return ServiceProtocolError("The connector service sent a malformed error.")
    data = error.get("data") if isinstance(error.get("data"), dict) else {}
    name = data.get("name") or ""
    message = data.get("message") or error.get("message") or name or "Unknown error"
    cls = REMOTE_ERRORS.get(name, ServiceError)
    return cls(str(message), remote_name=name, code=error.get("code"))
