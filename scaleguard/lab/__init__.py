"""The lab: a WinRM simulator of Scale Out nodes (``lab serve``) and the evidence and certificate generators."""

DEFAULT_SERVICE_MS = 500
"""A service start or stop is never instant on Windows; half a second keeps tests quick but real."""
