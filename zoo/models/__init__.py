"""Model families. Importing this package registers every model; add a family by adding a module here."""

from zoo.models import cpn, csrnet, p2pnet  # noqa: F401
from zoo.models.base import Batch, CrowdModel, Prediction

__all__ = ["Batch", "CrowdModel", "Prediction"]
