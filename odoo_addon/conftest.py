"""pytest and the addon's Odoo tests.

The tests in ``mts_connector/tests`` are Odoo ``TransactionCase`` tests: they
need an Odoo 17 server with a database, and run with
``odoo-bin -d DB -i mts_connector --test-enable --stop-after-init``. Importing
them (or the addon's ``__init__.py``) outside Odoo fails, so pytest does not
import anything under ``mts_connector``: it lists each Odoo test module as one
skipped test that says why and how to run it.
"""

import importlib.util
from pathlib import Path

import pytest

ADDON = Path(__file__).parent / "mts_connector"
#: The addons whose folders pytest must not import: this one and the g2p_mts bridge.
ADDONS = (ADDON, Path(__file__).parent / "mts_connector_g2p")

if importlib.util.find_spec("odoo") is None:
    REASON = (
        "Odoo 17 is not importable here: the addon's TransactionCase tests run under Odoo "
        "(odoo-bin -d DB -i mts_connector --test-enable --stop-after-init)"
    )
else:
    REASON = (
        "Odoo TransactionCase tests need an Odoo server and database: run them with "
        "odoo-bin -d DB -i mts_connector --test-enable --stop-after-init"
    )


class OdooTestModule(pytest.Item):
    """One Odoo test module, reported as skipped."""

    def runtest(self):
        pytest.skip(REASON)

    def reportinfo(self):
        return self.path, None, f"{self.path.name} (Odoo TransactionCase)"


class OdooAddonDirectory(pytest.Directory):
    """The addon folder: never imported by pytest."""

    def collect(self):
        for path in sorted((self.path / "tests").glob("test_*.py")):
            yield OdooTestModule.from_parent(self, name=path.name, path=path)


def pytest_collect_directory(path, parent):
    if path in ADDONS:
        return OdooAddonDirectory.from_parent(parent, path=path)
    return None
