"""Parsers shared by offline (evidence folder) and live (WinRM) collection: bytes or text in, snapshot
model objects out, never a file path. Both collectors hand the same raw material (config text,
certificate DER, netsh text, PowerShell JSON) to these functions, so a quirk fixed here is fixed for both.
"""
