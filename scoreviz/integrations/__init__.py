"""Adapters for training frameworks; each is optional and imported on its own."""
