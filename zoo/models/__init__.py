"""The model families, their registry and their weights.

Importing the package registers the packaged models (zoo.models.catalog) without importing torch or any family.
"""

from zoo.models import catalog  # noqa: F401  (registers the packaged models)
