"""The broker, its queues, and handing images to it fairly."""
