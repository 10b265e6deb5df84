"""The documented manual step behind each remediation name, in the words an operator acts on.

Policies name a remediation (``findings.model.REMEDIATIONS``); the fix engine automates it. A report reader who
fixes by hand needs the step itself, taken from Microsoft's "Deal with certificates in SSIS Scale Out"
and "Troubleshoot Scale Out" pages, so each name maps to the step those pages give.
"""

from __future__ import annotations

FIX_STEPS: dict[str, str] = {
    "rotate-master-certificate": (
        "Create a new master certificate in LocalMachine\\Root on the master (New-SelfSignedCertificate, "
        "Subject CN=<master endpoint host>), trust its public part on every worker, rebind it with "
        "netsh http add sslcert ipport=0.0.0.0:<port> certhash=<thumbprint> certstorename=Root "
        "appid=<original appid>, set SSLCertThumbprint, restart the master service, then re-pin every worker."
    ),
    "rotate-worker-certificate": (
        "Create a new worker certificate in LocalMachine\\My on the worker, install it into "
        "LocalMachine\\Root on the worker and on every master node, grant the worker service account its "
        "private key (winhttpcertcfg -g), set WorkerHttpsCertThumbprint, remove the old certificate, then "
        "restart the worker."
    ),
    "import-root-certificate": (
        "Import the certificate's public part (.cer) into LocalMachine\\Root on the node that lacks it "
        "(Import-Certificate -CertStoreLocation Cert:\\LocalMachine\\Root), then restart the affected "
        "service."
    ),
    "repair-master-binding": (
        "On the master: netsh http delete sslcert ipport=0.0.0.0:<port>, then netsh http add sslcert "
        "ipport=0.0.0.0:<port> certhash=<SSLCertThumbprint> certstorename=Root appid=<original appid>, "
        "then restart the master service."
    ),
    "repin-worker-master-thumbprint": (
        "Install the master's public certificate into the worker's LocalMachine\\Root, set "
        "MasterHttpsCertThumbprint in WorkerSettings.config to the master's SSLCertThumbprint, then restart "
        "the worker."
    ),
    "fix-worker-master-endpoint": (
        "Set MasterEndpoint in WorkerSettings.config to https://<a name the master certificate "
        "carries>:<master PortNumber>, then restart the worker service."
    ),
    "normalize-config-thumbprint": (
        "Rewrite the thumbprint in the settings file as exactly 40 hex digits (no spaces, no invisible "
        "U+200E copied from the certificate dialog), then restart the service."
    ),
    "grant-worker-key-access": (
        "Grant the worker service account read access to the worker certificate's private key: "
        "winhttpcertcfg.exe -g -c LOCAL_MACHINE\\My -s <CN> -a <worker service account>, then restart "
        "the worker."
    ),
    "start-service": (
        "Set the Scale Out service to start automatically and start it (Set-Service / Start-Service)."
    ),
    "remove-stale-worker-certificates": (
        "Delete the old worker certificates left in LocalMachine\\My "
        "(certmgr.exe /del /c /s /r localmachine My /n <CN of the old certificate>)."
    ),
    "set-schannel-trust-mode": (
        "On the master set HKLM\\SYSTEM\\CurrentControlSet\\Control\\SecurityProviders\\SCHANNEL "
        "ClientAuthTrustMode (REG_DWORD) to 2 (reg add ... /v ClientAuthTrustMode /t REG_DWORD /d 2 /f), or "
        "SendTrustedIssuerList to 0, then restart the master service and the workers (Troubleshoot Scale Out: "
        "HTTP 403)."
    ),
    "manual": "No automated fix: follow the policy's description and references.",
}


def fix_step(remediation: str | None) -> str:
    """The step for ``remediation``; an unknown name (a user's own pack) is shown as it is, never hidden."""
    if not remediation:
        return ""
    return FIX_STEPS.get(remediation, f"See the policy's references ({remediation}).")
