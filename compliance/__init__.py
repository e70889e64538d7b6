"""Compliance: what an image measures, and which of a marketplace profile's rules it fails."""
