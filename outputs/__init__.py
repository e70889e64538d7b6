"""Outputs: making an image's output, and sharing it across requests by variant."""
