"""Which network addresses the service may reach: the pure address classifier."""
