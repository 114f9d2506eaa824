from . import test_mts_connector
from . import test_settings
from . import test_sync
from . import test_real_service
from . import test_tours
from . import test_end_to_end
