"""Old import path of the config field mapping; it lives in `minimind_v.formats.fields` now."""
from ..formats.fields import (SIGLIP_FIELDS, default_vision, model_config_from_original,  # noqa: F401
                              original_config, rope_scaling_of, siglip_fields)
