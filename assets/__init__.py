"""The Dagster code location: thin glue from engine calls to assets (not an installed package)."""
