"""Greengrass v2 edge agent (see the edge-tier issue)."""
