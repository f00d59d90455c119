"""Serverless Framework plugins of this service (listed in serverless.yml)."""
