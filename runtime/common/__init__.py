"""The lowest layer: facts every other layer needs and no dependencies (paths, atomic writes, checksums)."""
