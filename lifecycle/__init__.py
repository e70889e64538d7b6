"""A request's life: creation, cancel and retry, image claims, finalizing, recovery, retention."""
