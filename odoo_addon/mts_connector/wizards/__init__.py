from . import mts_connector_import_wizard
from . import mts_connector_report
