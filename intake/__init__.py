"""What an upload may contain: the CSV grammar, idempotency and quotas."""
