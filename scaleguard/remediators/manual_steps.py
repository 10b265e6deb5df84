"""Findings scaleguard will not fix by itself, with the documented steps to fix them by hand.

Some defects have no safe automatic fix: a node that could not be collected, SSISDB disagreeing with the
master (only the master service writes it), a Root store full of CA certificates someone put there on
purpose. Others become manual when the snapshot lacks what a fix needs (an unknown service account, an
unusable PortNumber). Either way the operator gets the reason and Microsoft's steps, never silence.
"""

from __future__ import annotations

from scaleguard.findings.model import Finding
from scaleguard.reports.fixsteps import fix_step

_POLICY_STEPS: dict[str, list[str]] = {
    "SO-C01": [
        "Make the node reachable over WinRM (service running, firewall, credentials in the inventory) "
        "or add its evidence folder, then audit again.",
    ],
    "SO-C03": [
        "Restart the Scale Out Master service so it publishes its SSLCertThumbprint to SSISDB.",
        "Check with: SELECT property_value FROM SSISDB.catalog.master_properties "
        "WHERE property_name = 'SSLCERT_THUMBPRINT'.",
    ],
    "SO-M11": [
        "Remove the certificates that are not self-signed from the master's LocalMachine\\Root, or",
        "set HKLM\\SYSTEM\\CurrentControlSet\\Control\\SecurityProviders\\SCHANNEL SendTrustedIssuerList "
        "(REG_DWORD) to 0, and if non-self-signed certificates must stay, ClientAuthTrustMode "
        "(REG_DWORD) to 2.",
        "Restart the master, then restart every worker (Troubleshoot Scale Out: 403 Forbidden).",
    ],
}


def documented_steps(finding: Finding) -> list[str]:
    steps = _POLICY_STEPS.get(finding.policy)
    if steps is not None:
        return list(steps)
    text = fix_step(finding.remediation or "manual")
    return [text] if text else []
