from . import test_mts_connector
from . import test_settings
from . import test_sync
