"""Model families. Importing this package registers every model; add a family by adding a module here."""

from zoo.models import cpn, csrnet, p2pnet  # noqa: F401
from zoo.models.base import CrowdModel

__all__ = ["CrowdModel"]
