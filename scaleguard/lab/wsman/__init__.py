"""The lab's WS-Management server: the subset of WinRM (WinRS shells) that pywinrm speaks."""
