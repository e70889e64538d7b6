"""What the service may reach: the pure address classifier and the one URL rule, both free of I/O."""
