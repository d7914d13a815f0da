"""Model families (one module each) and the catalogue that registers their models (zoo/models/catalog.py)."""
