"""Readers that turn benchmark instance files into routing problems."""
