"""Watcher: list and watch the source for every active plan, publish sanitized originals."""
