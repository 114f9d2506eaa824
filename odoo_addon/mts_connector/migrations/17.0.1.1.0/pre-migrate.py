# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""17.0.1.1.0: the callback's extra headers became a write-only secret (they may hold HTTP
Basic credentials). Their values move from the plain column into Odoo's copy of the
secrets (``secret_values``), and the column is emptied so no credential stays in clear."""

import json


def migrate(cr, version):
    if not version:
        return
    cr.execute(
        "SELECT 1 FROM information_schema.columns WHERE table_name = 'mts_connector' "
        "AND column_name = 'callback_extra_headers'"
    )
    if not cr.fetchone():
        return
    cr.execute(
        "SELECT id, callback_extra_headers, secret_values FROM mts_connector "
        "WHERE callback_extra_headers IS NOT NULL AND callback_extra_headers != ''"
    )
    for rec_id, headers, secrets in cr.fetchall():
        try:
            merged = json.loads(secrets or "{}")
        except ValueError:
            merged = {}
        if not isinstance(merged, dict):
            merged = {}
        merged["callback_extra_headers"] = headers
        cr.execute(
            "UPDATE mts_connector SET secret_values = %s, callback_extra_headers = NULL WHERE id = %s",
            (json.dumps(merged, sort_keys=True), rec_id),
        )
