"""Baselines measured beside the product in the same run, with the same gunicorn settings."""
