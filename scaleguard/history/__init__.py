"""Audit history: every run and its open findings in one SQLite file, for "what changed since last night"."""
