"""Helpers the tests share: service URLs, backend handles, the fault harness and its app.

Nothing here is a test; pytest collects only ``test_*.py`` in the layer folders beside this one.
"""
