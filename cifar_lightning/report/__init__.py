"""Reporting: plots (pure functions), figures and W&B media, export, predict and compare."""
