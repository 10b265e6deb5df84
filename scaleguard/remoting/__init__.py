"""Reaching nodes: the inventory, credential references and one WinRM channel per host.

Both ``collect`` (read) and ``fix`` (change) use these; neither owns them.
"""
