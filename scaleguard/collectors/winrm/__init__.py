"""WinRM transport for live collection: one reused WinRS shell per host over pywinrm's ``Protocol``."""
