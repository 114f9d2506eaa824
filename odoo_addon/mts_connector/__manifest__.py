# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
{
    "name": "MTS Connector",
    "summary": "Mosip Token Seeder connectors for OpenG2P, run by the mts-connector service",
    "version": "17.0.1.1.0",
    "category": "OpenG2P",
    "website": "https://github.com/OpenG2P/openg2p-registry",
    "author": "OpenG2P",
    "license": "LGPL-3",
    "development_status": "Beta",
    "application": True,
    "depends": ["base"],
    "data": [
        "security/mts_connector_security.xml",
        "security/ir.model.access.csv",
        "data/ir_cron.xml",
        "views/mts_connector_views.xml",
        "views/mts_connector_run_views.xml",
        "views/mts_connector_delivery_views.xml",
        "views/res_config_settings_views.xml",
        "wizards/mts_connector_import_wizard_views.xml",
        "wizards/mts_connector_report_views.xml",
        "views/menus.xml",
    ],
    "assets": {
        "web.assets_tests": ["mts_connector/static/tests/tours/*.js"],
    },
}
