from . import mts_connector_service
from . import mts_connector_service_cache
from . import mts_connector_sync
from . import mts_connector
from . import mts_connector_run
from . import mts_connector_delivery
from . import res_config_settings
