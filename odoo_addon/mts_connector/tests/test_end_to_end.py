# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""End to end with no fake but ODK: this real Odoo 17 is the OpenG2P registry, the real
connector service walks it (or imports from a fake ODK Central), the real MTS makes the
tokens, and the service writes each one back into this registry's g2p.reg.id over
JSON-RPC (delivery_target = registry), exactly once.

While the service talks to this Odoo (HttpCase: every HTTP request shares the test's
transaction), the test thread leaves the cursor alone: it polls the service with the
addon's client only, then reads the registry once everything was delivered."""

import base64
import hashlib
import json
import logging
import os
import secrets
import subprocess
import tempfile
import time
from datetime import datetime, timedelta

from odoo.tests import HttpCase, tagged

from .. import client
from .common import REAL, skip_without_real, use_real_service, warm_manifests

_logger = logging.getLogger(__name__)

MAPPING_REGISTRY = {
    "vid": "vid",
    "name": ["given_name", "family_name"],
    "gender": "gender",
    "dob": "birthdate",
    "fullAddress": ["address"],
}
MAPPING_ODK = {"vid": "vid", "name": ["name"], "gender": "gender", "dob": "dob", "fullAddress": ["fullAddress"]}
ODK_EMAIL = "collector@example.org"
ODK_PASSWORD = "odk-e2e-pw"


def mock_token(vid, partner_id):
    """The mts-mock token: base64url(SHA3-256(vid + partner_id)) without padding."""
    digest = hashlib.sha3_256(f"{vid}{partner_id}".encode()).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


@tagged("post_install", "-at_install", "mts_real", "mts_e2e")
class TestEndToEnd(HttpCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        if not (REAL["service_url"] and REAL["mts_url"] and REAL["bin"]):
            skip_without_real("no real connector service, MTS or binary (scripts/real/run.sh)")
        warm_manifests()

    def setUp(self):
        super().setUp()
        use_real_service(self.env)
        self.addCleanup(client.forget_logins)
        IdType = self.env["g2p.id.type"]
        self.vid_type = IdType.search([("name", "=", "MOSIP VID")]) or IdType.create({"name": "MOSIP VID"})
        self.token_type = IdType.search([("name", "=", "MOSIP UIN TOKEN")]) or IdType.create(
            {"name": "MOSIP UIN TOKEN"}
        )
        if not self.env["gender.type"].search([("value", "=", "Female")]):
            self.env["gender.type"].create({"code": "Female", "value": "Female"})
        self.env.ref("base.user_admin").password = "admin-e2e"
        # The service's own client: used while the service calls this Odoo.
        self.service = client.ServiceClient(REAL["service_url"], "mts_connector", "admin", REAL["api_key"], timeout=30)
        self.run_tag = secrets.token_hex(4)

    def registrants(self, n, with_vid=True):
        partners = self.env["res.partner"]
        for i in range(n):
            vals = {
                "name": f"E2E {self.run_tag} {i}",
                "given_name": f"Given{i}",
                "family_name": f"Family {self.run_tag}",
                "is_registrant": True,
                "is_group": False,
                "gender": "Female",
                "birthdate": "1990-01-%02d" % (i % 28 + 1),
                "address": f"{i} Uhuru Road, Nairobi",
            }
            if with_vid:
                vals["reg_ids"] = [(0, 0, {"id_type": self.vid_type.id, "value": self.vid(i)})]
            partners |= partners.create(vals)
        self.env.flush_all()
        return partners

    def vid(self, i):
        return f"{int(self.run_tag, 16) % 10**6:06d}{i:010d}"

    def registry_login(self):
        return {
            "odoo_url": self.base_url(),
            "odoo_database": self.env.cr.dbname,
            "odoo_username": "admin",
            "odoo_password": "admin-e2e",
        }

    def wait_delivered(self, service_id, n, timeout=240):
        """Polls the service (not this Odoo) until `n` records were delivered."""
        deadline = time.monotonic() + timeout
        states = {}
        while time.monotonic() < deadline:
            rows = self.service.execute_kw(
                "mts.connector.delivery",
                "search_read",
                [[["connector_id", "=", service_id]]],
                {"fields": ["state", "last_error"]},
            )
            states = {}
            for row in rows:
                states[row["state"]] = states.get(row["state"], 0) + 1
            if states.get("delivered", 0) >= n and not states.get("pending"):
                return rows
            if states.get("failed"):
                self.fail(f"deliveries failed: {[r['last_error'] for r in rows if r['state'] == 'failed'][:3]}")
            time.sleep(0.5)
        runs = self.service.execute_kw(
            "mts.connector.run",
            "search_read",
            [[["connector_id", "=", service_id]]],
            {"fields": ["state", "mts_status", "error_message", "records_expected", "records_received"]},
        )
        self.fail(f"not delivered in time: deliveries {states}, runs {runs}")

    def wait_walk(self, service_id, timeout=60):
        """The connector's walk once it ended (its pages are tracked after the tokens land)."""
        deadline = time.monotonic() + timeout
        while True:
            runs = self.service.execute_kw(
                "mts.connector.run",
                "search_read",
                [[["connector_id", "=", service_id], ["split_of_id", "=", False]]],
                {"fields": ["state", "records_sent", "pages_done", "error_message"]},
            )
            if runs and runs[-1]["state"] in ("done", "done_with_errors", "empty", "failed", "cancelled"):
                return runs[-1]
            if time.monotonic() > deadline:
                self.fail(f"the walk did not end: {runs}")
            time.sleep(0.5)

    def assert_one_token_each(self, partners, vids):
        self.env.invalidate_all()
        for partner in partners:
            tokens = partner.reg_ids.filtered(lambda r: r.id_type == self.token_type)
            self.assertEqual(
                tokens.mapped("value"),
                [mock_token(vids[partner.id], REAL["mts_partner_id"])],
                f"registrant {partner.id}",
            )

    def test_registry_connector_writes_each_token_into_the_registry_once(self):
        partners = self.registrants(25)
        vids = {p.id: p.reg_ids.filtered(lambda r: r.id_type == self.vid_type).value for p in partners}
        domain = [["id", "in", partners.ids], ["reg_ids.id_type", "=like", "MOSIP VID"]]
        connector = self.env["mts.connector"].create(
            dict(
                self.registry_login(),
                name=f"E2E registry {self.run_tag}",
                mts_url=REAL["mts_url"],
                input_type="custom",
                is_recurring="recurring",
                interval_minutes=600,
                settle_seconds=0,
                max_records_per_request=10,
                mapping=json.dumps(MAPPING_REGISTRY),
                g2p_search_domain=json.dumps(domain + ["!", ["reg_ids.id_type", "=like", "MOSIP UIN TOKEN"]]),
                g2p_selected_fields=json.dumps(["id", "given_name", "family_name", "birthdate", "gender", "address"]),
                callback_mode="relay",
                delivery_target="registry",
                callback_in_bulk=True,
            )
        )
        sid = connector.service_id
        self.env.flush_all()
        self.service.execute_kw("mts.connector", "action_start", [[sid]])
        self.wait_delivered(sid, 25)
        walk = self.wait_walk(sid)
        self.service.execute_kw("mts.connector", "action_stop", [[sid]])
        self.assert_one_token_each(partners, vids)
        self.assertEqual((walk["state"], walk["records_sent"], walk["pages_done"]), ("done", 25, 3), walk)
        _logger.info("MTSC-E2E registry tokens=%d", len(partners))  # the tier's summary counts it

    def test_odk_connector_through_the_real_mts_with_a_manual_import(self):
        partners = self.registrants(12, with_vid=False)
        when = datetime.utcnow().replace(microsecond=0) - timedelta(days=2)
        vids, seed = {}, []
        for i, partner in enumerate(partners):
            vids[partner.id] = self.vid(100 + i)
            seed.append(
                {
                    "submission_date": (when + timedelta(minutes=i)).strftime("%Y-%m-%d %H:%M:%S"),
                    "fields": {
                        "vid": vids[partner.id],
                        "name": partner.name,
                        "gender": "Female",
                        "dob": "1990/01/01",
                        "fullAddress": partner.address,
                        "registrant_id": str(partner.id),
                    },
                }
            )
        odk = self.fake_odk(seed)
        connector = self.env["mts.connector"].create(
            dict(
                self.registry_login(),
                name=f"E2E ODK {self.run_tag}",
                mts_url=REAL["mts_url"],
                input_type="odk",
                is_recurring="recurring",
                interval_minutes=600,
                odk_base_url=odk["url"],
                odk_odata_url=odk["odata_url"],
                odk_email=ODK_EMAIL,
                odk_password=ODK_PASSWORD,
                mapping=json.dumps(MAPPING_ODK),
                callback_mode="relay",
                delivery_target="registry",
                callback_in_bulk=True,
                output_format="{partner_id: (.input.registrant_id | tonumber)}",
            )
        )
        sid = connector.service_id
        self.env.flush_all()
        start = (when - timedelta(hours=1)).strftime("%Y-%m-%d %H:%M:%S")
        end = (when + timedelta(hours=1)).strftime("%Y-%m-%d %H:%M:%S")
        self.service.execute_kw("mts.connector", "action_import", [[sid], start, end])
        self.wait_delivered(sid, len(partners))
        self.assert_one_token_each(partners, vids)
        _logger.info("MTSC-E2E odk tokens=%d", len(partners))  # the tier's summary counts it

    def fake_odk(self, seed):
        """Starts `mts-connector fake-odk` with `seed`; stops exactly it at clean-up."""
        fd, path = tempfile.mkstemp(suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump(seed, f)
        self.addCleanup(os.unlink, path)
        proc = subprocess.Popen(  # noqa: S603 - our own binary, fixed arguments
            [REAL["bin"], "fake-odk", "--email", ODK_EMAIL, "--password", ODK_PASSWORD, "--seed", path],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.addCleanup(proc.wait, 10)
        self.addCleanup(proc.terminate)
        line = proc.stdout.readline()
        if not line:
            self.fail("fake-odk did not start")
        return json.loads(line)
