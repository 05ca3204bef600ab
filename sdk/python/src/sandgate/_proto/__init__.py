"""Modules generated from proto/sandgate/v1/sandgate.proto by scripts/generate.py."""
