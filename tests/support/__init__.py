"""Helpers the tests import as `support.<module>`, one module per concept; fixtures stay in conftest.py."""
