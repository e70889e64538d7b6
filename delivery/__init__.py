"""Webhooks: the outbox, signing, and the built-in receiver's inbox."""
