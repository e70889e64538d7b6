"""Outbound HTTP under the address guard, deadlines and per-address slots."""
