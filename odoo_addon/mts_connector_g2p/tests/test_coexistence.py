# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""mts_connector next to OpenG2P's g2p_mts (this bridge installed with them): each field
once on the form, one Settings screen whose ID types are g2p_mts's records, one VID
clean-up (the service's), and the upstream XML ids still there for modules that inherit
them. scripts/real/run.sh runs these in two databases (mts_connector first, then g2p_mts;
and both at once) and checks the uninstall restores g2p_mts's cron."""

from lxml import etree

from odoo.tests import tagged
from odoo.tests.common import TransactionCase

from odoo.addons.mts_connector.tests.common import trap_service_calls

REGISTRY_GROUP = "OpenG2P Registry Input Configuration"


def visible(node):
    """Whether no ancestor (or the node) is hidden for good."""
    while node is not None:
        if node.get("invisible") in ("1", "True", "true"):
            return False
        node = node.getparent()
    return True


@tagged("post_install", "-at_install", "mts_coexistence")
class TestCoexistence(TransactionCase):
    def form_arch(self):
        return etree.fromstring(self.env["mts.connector"].get_views([(False, "form")])["views"]["form"]["arch"])

    def test_the_form_shows_each_registry_field_once(self):
        arch = self.form_arch()
        for name in ("g2p_search_domain", "g2p_selected_fields", "odoo_url", "mapping", "output_format"):
            shown = [f for f in arch.xpath(f"//field[@name='{name}']") if visible(f)]
            self.assertEqual(len(shown), 1, f"{name} is shown {len(shown)} times")
        groups = [g for g in arch.xpath(f"//group[@string='{REGISTRY_GROUP}']") if visible(g)]
        self.assertEqual(len(groups), 1)

    def test_a_module_inheriting_g2p_mts_form_still_installs(self):
        view = self.env["ir.ui.view"].create(
            {
                "name": "a downstream module's extension of g2p_mts's form",
                "model": "mts.connector",
                "inherit_id": self.env.ref("g2p_mts.view_g2p_mts_connectors_form").id,
                "arch": """<xpath expr="//field[@name='g2p_selected_fields']" position="after">
                               <field name="odoo_database" string="Downstream field"/>
                           </xpath>""",
            }
        )
        self.assertTrue(view.id)
        self.assertTrue(self.form_arch().xpath("//field[@string='Downstream field']"))

    def test_the_upstream_xml_ids_are_kept(self):
        for xmlid in (
            "mts_connector.view_mts_connectors_form",
            "mts_connector.view_mts_connectors_tree",
            "mts_connector.view_mts_connectors_search",
            "mts_connector.action_mts_connector",
            "mts_connector.action_mts_conf_action",
            "mts_connector.mts_importer_root",
            "mts_connector.mts_importer_connector",
            "g2p_mts.view_g2p_mts_connectors_form",
            "g2p_mts.res_config_settings_view_form",
            "g2p_mts.g2p_mts_config_settings_action",
            "g2p_mts.g2p_mts_config_settings",
            "g2p_mts.action_g2p_mts_vid_delete_trigger",
            "g2p_mts.to_delete_g2p_reg_id_vid",
        ):
            self.assertTrue(self.env.ref(xmlid, raise_if_not_found=False), xmlid)

    def test_one_settings_menu_and_one_settings_app(self):
        root = self.env.ref("mts_connector.mts_importer_root")
        menus = self.env["ir.ui.menu"].search([("parent_id", "=", root.id), ("name", "=", "Settings")])
        self.assertEqual(len(menus), 1)
        arch = etree.fromstring(self.env["res.config.settings"].get_views([(False, "form")])["views"]["form"]["arch"])
        self.assertEqual(arch.xpath("//app[@name='g2p_mts_config_settings']")[0].get("notApp"), "1")
        (ours,) = arch.xpath("//app[@name='mts_connector']")
        self.assertTrue(ours.xpath(".//field[@name='g2p_mts_vid_id_type']"))
        self.assertEqual(self.env.ref("g2p_mts.g2p_mts_config_settings_action").context.count("mts_connector"), 1)

    def test_g2p_mts_id_types_are_the_setting_and_reach_every_connector(self):
        IdType = self.env["g2p.id.type"]
        vid = IdType.create({"name": "National VID"})
        token = IdType.search([("name", "=", "MOSIP UIN TOKEN")]) or IdType.create({"name": "MOSIP UIN TOKEN"})
        with trap_service_calls(self.env) as service:
            connector = self.env["mts.connector"].create(
                {
                    "name": "registry",
                    "input_type": "odk",
                    "is_recurring": "recurring",
                    "interval_minutes": 60,
                    "odk_base_url": "https://odk.example.org",
                    "odk_odata_url": "https://odk.example.org/v1/projects/1/forms/f.svc",
                    "odk_email": "a@example.org",
                    "odk_password": "pw",
                    "callback_url": "https://registry.example.org/cb",
                    "callback_authtype": "none",
                }
            )
            settings = self.env["res.config.settings"].create(
                {"g2p_mts_vid_id_type": vid.id, "g2p_mts_uin_token_id_type": token.id}
            )
            settings.execute()
            params = self.env["ir.config_parameter"].sudo()
            self.assertEqual(params.get_param("g2p_mts.vid_id_type"), str(vid.id))
            self.assertEqual(params.get_param("mts_connector.vid_id_type"), "National VID")
            self.assertEqual(connector.vid_id_type, "National VID")
            writes = service.calls_to("write")
            self.assertEqual(len(writes), 1)
            self.assertEqual(writes[0][2][1]["vid_id_type"], "National VID")
            # Reopened, the screen shows the same single value.
            self.assertEqual(self.env["res.config.settings"].create({}).mts_connector_vid_id_type, "National VID")

    def test_only_the_service_cleans_vids_up(self):
        cron = self.env.ref("g2p_mts.to_delete_g2p_reg_id_vid")
        self.assertFalse(cron.active)
        self.assertIn(
            self.env["ir.config_parameter"].sudo().get_param("mts_connector_g2p.vid_cron_was_active"), ("0", "1")
        )
        # g2p_mts's switch cannot turn it back on while the bridge is installed.
        settings = self.env["res.config.settings"].create({"g2p_mts_vid_delete_job_status": True})
        settings.execute()
        self.assertFalse(cron.active)
        # Run by hand, g2p_mts's job deletes nothing.
        IdType = self.env["g2p.id.type"]
        vid_type = IdType.search([("name", "=", "MOSIP VID")]) or IdType.create({"name": "MOSIP VID"})
        token_type = IdType.search([("name", "=", "MOSIP UIN TOKEN")]) or IdType.create({"name": "MOSIP UIN TOKEN"})
        partner = self.env["res.partner"].create(
            {
                "name": "Registrant",
                "is_registrant": True,
                "reg_ids": [
                    (0, 0, {"id_type": vid_type.id, "value": "4000000000000001"}),
                    (0, 0, {"id_type": token_type.id, "value": "token"}),
                ],
            }
        )
        self.env["mts.connector"].delete_vids_if_token()
        self.assertEqual(len(partner.reg_ids), 2)
