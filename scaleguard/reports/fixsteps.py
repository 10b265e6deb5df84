"""The documented manual step behind each remediation name, in the words an operator acts on.

Policies name a remediation (``findings.model.Remediation``, where the names are declared once); the
fix engine automates it. A report reader who
fixes by hand needs the step itself, taken from Microsoft's "Deal with certificates in SSIS Scale Out"
and "Troubleshoot Scale Out" pages, so each name maps to the step those pages give.
"""

from __future__ import annotations

from typing import assert_never

from scaleguard.findings.model import Remediation


def _documented(remediation: Remediation) -> str:  # noqa: PLR0911 - one answer per name
    """Exhaustive over :class:`Remediation` (mypy proves it), so a new name cannot lack its step."""
    match remediation:
        case Remediation.ROTATE_MASTER_CERTIFICATE:
            return (
                "Create a new master certificate in LocalMachine\\Root on the master (New-SelfSignedCertificate, "
                "Subject CN=<master endpoint host>), trust its public part on every worker, rebind it with netsh "
                "http add sslcert ipport=0.0.0.0:<port> certhash=<thumbprint> certstorename=Root appid=<original "
                "appid>, set SSLCertThumbprint, restart the master service, then re-pin every worker."
            )
        case Remediation.ROTATE_WORKER_CERTIFICATE:
            return (
                "Create a new worker certificate in LocalMachine\\My on the worker, install it into "
                "LocalMachine\\Root on the worker and on every master node, grant the worker service account its "
                "private key (winhttpcertcfg -g), set WorkerHttpsCertThumbprint, remove the old certificate, then"
                " restart the worker."
            )
        case Remediation.IMPORT_ROOT_CERTIFICATE:
            return (
                "Import the certificate's public part (.cer) into LocalMachine\\Root on the node that lacks it "
                "(Import-Certificate -CertStoreLocation Cert:\\LocalMachine\\Root), then restart the affected "
                "service."
            )
        case Remediation.REPAIR_MASTER_BINDING:
            return (
                "On the master: netsh http delete sslcert ipport=0.0.0.0:<port>, then netsh http add sslcert "
                "ipport=0.0.0.0:<port> certhash=<SSLCertThumbprint> certstorename=Root appid=<original appid>, "
                "then restart the master service."
            )
        case Remediation.REPIN_WORKER_MASTER_THUMBPRINT:
            return (
                "Install the master's public certificate into the worker's LocalMachine\\Root, set "
                "MasterHttpsCertThumbprint in WorkerSettings.config to the master's SSLCertThumbprint, then "
                "restart the worker."
            )
        case Remediation.FIX_WORKER_MASTER_ENDPOINT:
            return (
                "Set MasterEndpoint in WorkerSettings.config to https://<a name the master certificate "
                "carries>:<master PortNumber>, then restart the worker service."
            )
        case Remediation.NORMALIZE_CONFIG_THUMBPRINT:
            return (
                "Rewrite the thumbprint in the settings file as exactly 40 hex digits (no spaces, no invisible "
                "U+200E copied from the certificate dialog), then restart the service."
            )
        case Remediation.GRANT_WORKER_KEY_ACCESS:
            return (
                "Grant the worker service account read access to the worker certificate's private key: "
                "winhttpcertcfg.exe -g -c LOCAL_MACHINE\\My -s <CN> -a <worker service account>, then restart the "
                "worker."
            )
        case Remediation.START_SERVICE:
            return "Set the Scale Out service to start automatically and start it (Set-Service / Start-Service)."
        case Remediation.REMOVE_STALE_WORKER_CERTIFICATES:
            return (
                "Delete the old worker certificates left in LocalMachine\\My (certmgr.exe /del /c /s /r "
                "localmachine My /n <CN of the old certificate>)."
            )
        case Remediation.SET_SCHANNEL_TRUST_MODE:
            return (
                "On the master set HKLM\\SYSTEM\\CurrentControlSet\\Control\\SecurityProviders\\SCHANNEL "
                "ClientAuthTrustMode (REG_DWORD) to 2 (reg add ... /v ClientAuthTrustMode /t REG_DWORD /d 2 /f), "
                "or SendTrustedIssuerList to 0, then restart the master service and the workers (Troubleshoot "
                "Scale Out: HTTP 403)."
            )
        case Remediation.MANUAL:
            return "No automated fix: follow the policy's description and references."
        case _:
            assert_never(remediation)


FIX_STEPS: dict[str, str] = {r.value: _documented(r) for r in Remediation}


def fix_step(remediation: str | None) -> str:
    """The step for ``remediation``; an unknown name (a user's own pack) is shown as it is, never hidden."""
    if not remediation:
        return ""
    return FIX_STEPS.get(remediation, f"See the policy's references ({remediation}).")
