"""Root conftest of the scenario suites (testsuites/).

The harness's options, fixtures and markers come from its pytest plugin,
harness/plugin.py (registered as the `xenhil` pytest11 entry point): that module is
the one place to read what a scenario can ask for.
"""
