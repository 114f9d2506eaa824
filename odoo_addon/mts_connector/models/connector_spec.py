# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""What the service's connector looks like: selections, defaults, field lists.

No Odoo import: the model (``mts_connector.py``) and the synchronisation
(``mts_connector_sync.py``) share it, and tests read it without Odoo.
"""

from datetime import date, datetime

SERVICE_MODEL = "mts.connector"

#: Context key: change the Odoo records only (the service already has it).
LOCAL_ONLY = "mts_connector_local_only"

DEFAULT_MTS_URL = "http://mosip-token-seeder.mosip-token-seeder"
DEFAULT_MAPPING = (
    '{"vid":"vid","name":["name"],"gender":"gender","dob":"dob",'
    '"phoneNumber":"phoneNumber","emailId":"emailId","fullAddress":["fullAddress"]}'
)
DEFAULT_G2P_DOMAIN = (
    '[["is_registrant","=",true],["reg_ids.id_type","=like","MOSIP VID"],'
    '"!",["reg_ids.id_type","=like","MOSIP UIN TOKEN"]]'
)
DEFAULT_VID_DELETE_DOMAIN = (
    '[["is_registrant","=",true],["reg_ids.id_type","=like","MOSIP VID"],'
    '["reg_ids.id_type","=like","MOSIP UIN TOKEN"]]'
)
DEFAULT_G2P_FIELDS = '["id","given_name","family_name","birthdate","gender","address","email","phone"]'

JOB_STATUS = [
    ("draft", "Draft"),
    ("started", "Started"),
    ("running", "Running"),
    ("completed", "Completed"),
]
INPUT_TYPES = [("odk", "ODK"), ("custom", "OpenG2P Registry")]
OUTPUT_TYPES = [("json", "JSON")]
DELIVERY_TYPES = [("callback", "Callback")]
JOB_TYPES = [("recurring", "Recurring"), ("onetime", "One time")]
HTTP_METHODS = [("POST", "POST"), ("PUT", "PUT"), ("GET", "GET"), ("PATCH", "PATCH")]
AUTH_TYPES = [
    ("none", "None"),
    ("odoo", "Odoo"),
    ("oauth", "OAuth"),
    ("staticBearer", "Static Bearer"),
]
CALLBACK_MODES = [
    ("direct", "Direct (MTS calls the target)"),
    ("relay", "Relay (through this service)"),
]
DELIVERY_TARGETS = [
    ("http", "HTTP callback (Callback URL)"),
    ("registry", "Registry (g2p.reg.id over JSON-RPC)"),
]
#: Run states in which a run is still open (the service refuses Run now then).
OPEN_RUN_STATES = ["queued", "submitting", "submitted", "retrying"]
RUN_STATES = [
    ("queued", "Queued"),
    ("submitting", "Submitting"),
    ("submitted", "Submitted (tracked)"),
    ("done", "Done"),
    ("done_with_errors", "Done with errors"),
    ("empty", "Empty window"),
    ("retrying", "Retrying"),
    ("failed", "Failed"),
    ("cancelled", "Cancelled"),
]

#: Write-only fields: sent to the service when changed, never read back. The
#: service answers them masked; Odoo keeps its copy in ``secret_values``
#: (system group only) to repopulate a service that lost its data.
SECRET_FIELDS = (
    "odk_password",
    "callback_extra_headers",
    "callback_auth_password",
    "callback_auth_client_secret",
    "callback_auth_token",
    "odoo_password",
)

#: The fields of the service's connector that Odoo writes, in its order.
SERVICE_FIELDS = (
    "name",
    "mts_url",
    "input_type",
    "mapping",
    "output_type",
    "output_format",
    "delivery_type",
    "lang_code",
    "is_recurring",
    "start_datetime",
    "end_datetime",
    "interval_minutes",
    "cron_expression",
    "settle_seconds",
    "mts_timeout",
    "max_records_per_request",
    "mts_max_parallel",
    "odk_base_url",
    "odk_odata_url",
    "odk_email",
    "odk_password",
    "callback_url",
    "callback_httpmethod",
    "callback_timeout",
    "callback_authtype",
    "callback_mode",
    "delivery_target",
    "callback_in_bulk",
    "callback_extra_headers",
    "callback_auth_url",
    "callback_auth_database",
    "callback_auth_username",
    "callback_auth_password",
    "callback_auth_client_id",
    "callback_auth_client_secret",
    "callback_auth_token",
    "g2p_search_domain",
    "g2p_selected_fields",
    "odoo_url",
    "odoo_database",
    "odoo_username",
    "odoo_password",
    "vid_id_type",
    "uin_token_id_type",
    "delete_vid_after_token",
    "vid_delete_interval_minutes",
    "vid_delete_search_domain",
)

#: Fields computed from the service by ``_compute_service_state``.
STATE_FIELDS = (
    "job_status",
    "next_run_at",
    "last_run_name",
    "last_run_state",
    "last_run_window_start",
    "last_run_window_end",
    "last_run_mts_status",
    "last_run_error",
    "has_open_run",
    "service_message",
)
LAST_RUN_FIELDS = ["name", "state", "window_start", "window_end", "mts_status", "error_message"]

#: Runs shown in the form and fetched by the smart button.
RECENT_RUNS = 20
RUNS_LISTED = 200
FAILED_DELIVERIES_LISTED = 100


def service_value(value):
    """A field value as the service takes it (datetimes as UTC strings)."""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, date):
        return value.strftime("%Y-%m-%d")
    if value is None:
        return False
    return value


def same_value(local, remote):
    """Whether a local and a service value mean the same (unset is ``False``, ``""`` or ``0``)."""
    if isinstance(local, bool) or isinstance(remote, bool) or local in ("", None) or remote in ("", None):
        return (local or False) == (remote or False)
    return local == remote
