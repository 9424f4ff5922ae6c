"""Bundled models (the shapes CLIP). Importing registers their names with `dualex.load`."""
