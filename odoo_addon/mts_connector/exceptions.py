# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""Odoo exceptions for failures of the connector service.

The client raises the Odoo-free classes of ``service_errors``; ``to_odoo`` is
the one place they become what Odoo shows the user, always with the service's
own message. Raise the result ``from`` the original error.
"""

from odoo import _
from odoo.exceptions import AccessDenied, AccessError, MissingError, UserError, ValidationError

from . import service_errors


class ConnectorServiceError(UserError):
    """The connector service could not do what was asked (a ``UserError``).

    The Odoo 17 web client shows a plain warning dialog only for the exception names
    it knows (``odoo.exceptions.UserError``, ...); any other name gets the red "Odoo
    Server Error" with a traceback. It also looks at ``data.context.exception_class``
    (``odoo.http.serialize_exception`` sends the exception's ``context``), so this
    class says it is shown as a ``UserError`` there while Python code can still catch
    it by its own name.
    """

    def __init__(self, message):
        super().__init__(message)
        self.context = {"exception_class": "odoo.exceptions.UserError"}


class ConnectorServiceUnreachable(ConnectorServiceError):
    """The connector service did not answer: refused connection, timeout, bad URL."""


def to_odoo(err):
    """The Odoo exception for a ``service_errors.ServiceError``."""
    message = err.message
    if isinstance(err, service_errors.ServiceValidationError):
        return ValidationError(message)
    if isinstance(err, service_errors.ServiceMissingError):
        return MissingError(message)
    if isinstance(err, service_errors.ServiceAccessDenied):
        # AccessDenied hides its traceback and its text is shown as is: say
        # which side refused, so nobody hunts a wrong Odoo password.
        return AccessDenied(_("Connector service: %s", message))
    if isinstance(err, service_errors.ServiceAccessError):
        return AccessError(message)
    if isinstance(err, service_errors.ServiceUnreachable):
        return ConnectorServiceUnreachable(message)
    if isinstance(err, service_errors.ServiceUserError):
        return UserError(message)
    if isinstance(err, service_errors.ServiceNotConfigured | service_errors.ServiceProtocolError):
        return ConnectorServiceError(message)
    # An error the service has no Odoo class for: ValueError, TypeError, or
    # AttributeError for a method this version of the service does not have.
    return ConnectorServiceError(_("The connector service refused the call: %s", message))
