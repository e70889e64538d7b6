"""What the test tiers share: backing services, the running service, loopback servers, receivers, launches.

tests/conftest.py loads the modules that hold fixtures as pytest plugins; tests import the helpers.
"""
