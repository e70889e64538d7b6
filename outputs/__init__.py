"""Outputs shared across requests: variants and reuse."""
