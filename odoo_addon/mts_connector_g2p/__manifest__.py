# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
{
    "name": "MTS Connector: OpenG2P g2p_mts bridge",
    "summary": "Makes OpenG2P's g2p_mts and the mts-connector addon one screen, one setting, one VID clean-up",
    "version": "17.0.1.0.0",
    "category": "OpenG2P",
    "website": "https://github.com/OpenG2P/openg2p-registry",
    "author": "OpenG2P",
    "license": "LGPL-3",
    "development_status": "Beta",
    "depends": ["mts_connector", "g2p_mts"],
    "auto_install": True,
    "data": [
        "views/g2p_mts_views.xml",
    ],
    "post_init_hook": "post_init_hook",
    "uninstall_hook": "uninstall_hook",
}
