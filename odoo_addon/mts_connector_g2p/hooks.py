# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""Install and uninstall of the bridge: g2p_mts's VID clean-up cron and its settings.

Nothing here calls the connector service (an install must not depend on it being up):
connectors get the mapped ID types locally, and the synchronisation job pushes them.
"""

import logging

from odoo.addons.mts_connector.models.connector_spec import LOCAL_ONLY

_logger = logging.getLogger(__name__)

CRON = "g2p_mts.to_delete_g2p_reg_id_vid"
#: Whether g2p_mts's cron was active before the bridge neutralised it ("1" / "0").
CRON_WAS_ACTIVE = "mts_connector_g2p.vid_cron_was_active"
#: (g2p_mts parameter holding a g2p.id.type id, mts_connector parameter holding its name)
ID_TYPE_PARAMS = (
    ("g2p_mts.vid_id_type", "mts_connector.vid_id_type", "vid_id_type"),
    ("g2p_mts.uin_token_id_type", "mts_connector.uin_token_id_type", "uin_token_id_type"),
)


def neutralise_cron(env):
    cron = env.ref(CRON, raise_if_not_found=False)
    if not cron:
        return
    params = env["ir.config_parameter"].sudo()
    if not params.get_param(CRON_WAS_ACTIVE):  # get_param answers False when unset
        params.set_param(CRON_WAS_ACTIVE, "1" if cron.active else "0")
    cron.sudo().active = False


def map_id_types(env):
    """One setting: g2p_mts's record ids win; the names mts_connector keeps follow them
    (or, where g2p_mts has none, the ids follow our names)."""
    params = env["ir.config_parameter"].sudo()
    IdType = env["g2p.id.type"].sudo()
    changed = {}
    for g2p_param, our_param, field in ID_TYPE_PARAMS:
        raw = params.get_param(g2p_param)
        record = IdType.browse(int(raw)).exists() if raw and str(raw).isdigit() else IdType
        if record:
            if params.get_param(our_param) != record.name:
                params.set_param(our_param, record.name)
                changed[field] = record.name
            continue
        name = params.get_param(our_param) or env["mts.connector.service"]._setting(field)
        match = IdType.search([("name", "=", name)], limit=1)
        if match:
            params.set_param(g2p_param, str(match.id))
    if changed:
        connectors = env["mts.connector"].sudo().with_context(**{LOCAL_ONLY: True}).search([])
        connectors.write(changed)
        _logger.info("g2p_mts ID types mapped onto %d connectors (pushed by the synchronisation job)", len(connectors))


def post_init_hook(env):
    neutralise_cron(env)
    map_id_types(env)


def uninstall_hook(env):
    """Gives g2p_mts back what the bridge changed: its cron (as it was), its menu and
    its settings action."""
    menu = env.ref("g2p_mts.g2p_mts_config_settings", raise_if_not_found=False)
    if menu:
        menu.sudo().active = True
    action = env.ref("g2p_mts.g2p_mts_config_settings_action", raise_if_not_found=False)
    if action:
        action.sudo().context = "{'module' : 'g2p_mts', 'bin_size': False}"
    cron = env.ref(CRON, raise_if_not_found=False)
    params = env["ir.config_parameter"].sudo()
    was_active = params.get_param(CRON_WAS_ACTIVE)
    if cron and was_active:
        cron.sudo().active = was_active == "1"
    params.set_param(CRON_WAS_ACTIVE, False)
