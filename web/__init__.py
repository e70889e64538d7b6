"""The HTTP routes beyond the design card's three blueprints."""
