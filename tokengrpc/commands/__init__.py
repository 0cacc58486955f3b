"""The ``tokengrpc`` commands, one module each; ``tokengrpc.cli`` parses and dispatches.

This package is the composition root: the only part of ``tokengrpc`` that
starts the gateway (``tests/test_layering.py``).
"""
