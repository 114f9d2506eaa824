# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""The one way out of this addon: calls to the connector service.

Standard library only and no Odoo import, so it is tested against the real
service binary without Odoo. The service speaks Odoo's external JSON-RPC API:
``common.login`` once, then ``object.execute_kw(db, uid, api_key, model,
method, args, kwargs)`` on ``POST <url>/jsonrpc``.

Failures raise the classes of ``service_errors``; ``exceptions.py`` turns them
into Odoo exceptions. Nothing here logs or raises a payload, a password or the
API key: logs name the URL (without any ``user:password@``), the model, the
method, the number of ids and the duration.
"""

import hashlib
import http.client
import itertools
import json
import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

from . import service_errors as errors

_logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 30.0

_request_ids = itertools.count(1)

# uid per (url, db, login, key digest): one ``common.login`` per process and
# credentials, not one per call. Only a digest of the key is kept.
_uids = {}
_uids_lock = threading.Lock()


def redact_url(url):
    """``url`` without ``user:password@``, query or fragment, for messages and logs."""
    try:
        parts = urllib.parse.urlsplit(url or "")
    except ValueError:
        return "<invalid URL>"
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = f"{host}:{port}" if port else host
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _count_ids(args):
    """How many record ids the first argument holds (for logs), or None."""
    if not args:
        return None
    first = args[0]
    if isinstance(first, list | tuple) and all(isinstance(i, int) for i in first):
        return len(first)
    if isinstance(first, int) and not isinstance(first, bool):
        return 1
    return None


class ServiceClient:
    """A client of one connector service, with one set of credentials."""

    def __init__(self, url, db, login, api_key, timeout=DEFAULT_TIMEOUT):
        if not url:
            raise errors.ServiceNotConfigured("No URL is configured for the connector service.")
        self.url = url.rstrip("/")
        self.db = db
        self.login = login
        self._api_key = api_key or ""
        self.timeout = float(timeout or DEFAULT_TIMEOUT)
        # A user:password@ part is dropped: credentials travel in the call only.
        self.safe_url = redact_url(self.url).rstrip("/")
        parts = urllib.parse.urlsplit(self.url)
        try:
            parts.port  # noqa: B018 (raises ValueError on a port that is not a number)
        except ValueError:
            raise errors.ServiceNotConfigured(
                f"The connector service URL {self.safe_url!r} has a port that is not valid."
            ) from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise errors.ServiceNotConfigured(
                f"The connector service URL {self.safe_url!r} is not an http(s) URL."
            )

    def __repr__(self):
        return f"<ServiceClient {self.safe_url} db={self.db!r} login={self.login!r}>"

    # -- the JSON-RPC envelope ------------------------------------------------

    def _post(self, service, method, args):
        payload = {
            "jsonrpc": "2.0",
            "method": "call",
            "params": {"service": service, "method": method, "args": args},
            "id": next(_request_ids),
        }
        body = json.dumps(payload).encode()
        request = urllib.request.Request(
            self.safe_url + "/jsonrpc",
            data=body,
            headers={"Content-Type": "application/json", "Accept": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as err:
            remote = self._error_in_body(err)
            err.close()
            if remote is not None:
                raise remote from None
            raise errors.ServiceProtocolError(
                f"The connector service at {self.safe_url} answered HTTP {err.code} "
                f"instead of a JSON-RPC result; check the service URL."
            ) from None
        except urllib.error.URLError as err:
            raise self._unreachable(err.reason) from None
        except (OSError, http.client.HTTPException) as err:
            # Timeouts while reading, resets, a closed connection.
            raise self._unreachable(err) from None
        except ValueError:
            # http.client.InvalidURL: a port that is not a number, and the like.
            raise errors.ServiceNotConfigured(
                f"The connector service URL {self.safe_url!r} is not valid."
            ) from None
        try:
            answer = json.loads(raw)
        except ValueError:
            raise errors.ServiceProtocolError(
                f"The connector service at {self.safe_url} did not answer JSON; check the service URL."
            ) from None
        if not isinstance(answer, dict):
            raise errors.ServiceProtocolError(f"The connector service at {self.safe_url} sent a malformed answer.")
        if answer.get("error") is not None:
            raise errors.from_remote(answer["error"])
        if "result" not in answer:
            raise errors.ServiceProtocolError(f"The connector service at {self.safe_url} sent a malformed answer.")
        return answer["result"]

    @staticmethod
    def _error_in_body(http_error):
        """The service's JSON-RPC error sent with an HTTP error status (e.g. 413), if any."""
        try:
            answer = json.loads(http_error.read(65536) or b"null")
        except (OSError, ValueError, http.client.HTTPException):
            return None
        if isinstance(answer, dict) and isinstance(answer.get("error"), dict):
            return errors.from_remote(answer["error"])
        return None

    def _unreachable(self, reason):
        if isinstance(reason, TimeoutError):
            detail = f"no answer within {self.timeout:g} s"
        else:
            detail = str(reason) or reason.__class__.__name__
        _logger.warning("connector service unreachable at %s: %s", self.safe_url, detail)
        return errors.ServiceUnreachable(f"The connector service is unreachable at {self.safe_url} ({detail}).")

    # -- services ---------------------------------------------------------------

    def version(self):
        """``common.version``: the service's version dict (no credentials needed)."""
        return self._post("common", "version", [])

    def _cache_key(self):
        digest = hashlib.sha256(self._api_key.encode()).hexdigest()
        return (self.url, self.db, self.login, digest)

    def authenticate(self):
        """The uid of the configured login, or ``ServiceAccessDenied``."""
        key = self._cache_key()
        with _uids_lock:
            uid = _uids.get(key)
        if uid:
            return uid
        uid = self._post("common", "login", [self.db, self.login, self._api_key])
        if not uid:
            raise errors.ServiceAccessDenied(
                f"The connector service at {self.safe_url} refused the database, login or API key "
                f"configured in Odoo (database {self.db!r}, login {self.login!r}).",
                remote_name="odoo.exceptions.AccessDenied",
            )
        with _uids_lock:
            _uids[key] = uid
        return uid

    def execute_kw(self, model, method, args=None, kwargs=None):
        """Calls ``model.method(*args, **kwargs)`` in the service and returns its result.

        Pass a whole recordset's ids in one call: the service methods take lists.
        """
        args = list(args or [])
        uid = self.authenticate()
        started = time.monotonic()
        try:
            result = self._post(
                "object",
                "execute_kw",
                [self.db, uid, self._api_key, model, method, args, dict(kwargs or {})],
            )
        except errors.ServiceAccessDenied:
            with _uids_lock:
                _uids.pop(self._cache_key(), None)
            raise
        except errors.ServiceError as err:
            _logger.info(
                "connector service refused %s.%s: %s",
                model,
                method,
                err.remote_name or err.__class__.__name__,
            )
            raise
        _logger.debug(
            "connector service %s.%s ids=%s in %.0f ms",
            model,
            method,
            _count_ids(args),
            (time.monotonic() - started) * 1000,
        )
        return result


def forget_logins():
    """Drops the cached uids (after the settings changed, and in tests)."""
    with _uids_lock:
        _uids.clear()
