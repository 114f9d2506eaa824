"""Connector values the Python tests share."""


def odk_connector(odk_password, **values):
    """A valid ODK connector whose URLs are all on the loopback, on a closed port: the
    service's engine may try them (runs, connection tests) and must reach nothing
    outside this machine. ``values`` override."""
    vals = {
        "name": "ODK survey",
        "mts_url": "http://127.0.0.1:9",
        "input_type": "odk",
        "is_recurring": "recurring",
        "interval_minutes": 60,
        "odk_base_url": "http://127.0.0.1:9/odk",
        "odk_odata_url": "http://127.0.0.1:9/odk/v1/projects/1/forms/f.svc",
        "odk_email": "collector@example.org",
        "odk_password": odk_password,
        "callback_url": "http://127.0.0.1:9/api/v1/registry/individual",
        "callback_authtype": "none",
    }
    vals.update(values)
    return vals
