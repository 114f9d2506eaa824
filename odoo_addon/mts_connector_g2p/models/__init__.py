from . import mts_connector
from . import res_config_settings
