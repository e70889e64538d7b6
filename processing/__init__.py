"""Processing images in batches: claimed together, fetched side by side, encoded one by one, recorded together."""
