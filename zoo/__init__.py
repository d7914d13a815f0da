"""crowd-zoo: points (P2PNet), density maps (CSRNet) and heatmaps (CPN) compared under identical conditions."""

from zoo.models.factory import create_model
from zoo.models.registry import Recipe, get_recipe, list_models, register_model

__all__ = ["Recipe", "create_model", "get_recipe", "list_models", "register_model"]
__version__ = "0.1.0"
