"""Decoding, preparing and encoding one image."""
