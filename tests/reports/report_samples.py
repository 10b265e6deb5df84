"""Hand-built artefacts for report tests: reports read only snapshot + findings, so no reader is needed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from scaleguard.findings.model import Finding, FindingsFile, Severity, Status
from scaleguard.reports.base import ReportContext
from scaleguard.snapshot.model import (
    Certificate,
    CertificateStore,
    ClusterSnapshot,
    Collection,
    CollectionState,
    ConfigFile,
    HostIdentity,
    NodeSnapshot,
    Snapshot,
)

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
HOSTILE = "<script>alert(1)</script>"
MASTER_TP = "A" * 40
WORKER_TP = "B" * 40


def cert(thumbprint: str, subject: str, days: float, *, key: bool | None = None) -> Certificate:
    return Certificate(
        thumbprint=thumbprint, subject=subject, issuer=subject, common_names=[subject.removeprefix("CN=")],
        serial="01", not_before=NOW - timedelta(days=300), not_after=NOW + timedelta(days=days),
        key_algorithm="RSA", key_bits=2048, signature_hash="sha1", self_signed=True,
        source=f"certs/Root/{thumbprint}.cer", has_private_key=key,
    )


def finding(
    policy: str, node: str, status: Status, severity: Severity, message: str, **extra: object
) -> Finding:
    return Finding(
        policy=policy, title=f"{policy} desired state", cluster="LAB", node=node, scope="worker",
        status=status, severity=severity, message=message, remediation="import-root-certificate",
        references=["https://learn.microsoft.com/sql/integration-services/scale-out/deal-with-certificates"],
        **extra,  # type: ignore[arg-type]
    )


def sample_context() -> ReportContext:
    master = NodeSnapshot(
        name="MASTER01", identity=HostIdentity(computer_name="MASTER01", fqdn="master01.contoso.local"),
        master_config=ConfigFile(path="MasterSettings.config", settings={"SSLCertThumbprint": MASTER_TP}),
        root=CertificateStore(name="Root", certificates=[cert(MASTER_TP, "CN=master01", 400, key=True),
                                                         cert(WORKER_TP, "CN=WORKER01", 20)]),
        my=CertificateStore(name="My", certificates=[]),
    )
    worker = NodeSnapshot(
        name="WORKER01", identity=HostIdentity(computer_name="WORKER01"),
        worker_config=ConfigFile(
            path="WorkerSettings.config",
            settings={"WorkerHttpsCertThumbprint": WORKER_TP, "DisplayName": HOSTILE},
        ),
        root=CertificateStore(name="Root", certificates=[cert(MASTER_TP, "CN=master01", 400),
                                                         cert("C" * 40, f"CN={HOSTILE}", -3)]),
        my=CertificateStore(name="My", certificates=[cert(WORKER_TP, "CN=WORKER01", 20, key=True)]),
    )
    gone = NodeSnapshot(
        name="WORKER02", identity=HostIdentity(computer_name="WORKER02"),
        collection=Collection(state=CollectionState.NO_CONFIG, reason="no WorkerSettings.config"),
    )
    snapshot = Snapshot(clusters=[ClusterSnapshot(cluster="LAB", collected_at=NOW, source="evidence/LAB",
                                                  nodes=[master, worker, gone])])
    findings = [
        finding("SO-W03", "WORKER01", Status.PASS, Severity.CRITICAL, "master certificate trusted"),
        finding("SO-W10", "WORKER01", Status.FAIL, Severity.HIGH, "worker certificate expires in 20 days",
                evidence={"not_after": "2025-03-21", "display_name": HOSTILE}),
        finding("SO-W13", "WORKER01", Status.FAIL, Severity.LOW, f"stale certificate {HOSTILE} left in My"),
        finding("SO-C01", "WORKER02", Status.ERROR, Severity.CRITICAL, "no WorkerSettings.config"),
        finding("SO-W09", "WORKER01", Status.NOT_ASSESSED, Severity.CRITICAL, "keys.json missing"),
        finding("SO-W11", "WORKER01", Status.WAIVED, Severity.MEDIUM, "service stopped",
                waiver={"reason": "decommissioning", "expires": "2025-04-01"}),
        finding("SO-M02", "MASTER01", Status.PASS, Severity.CRITICAL, "master certificate in Root"),
        finding("SO-M07", "MASTER01", Status.PASS, Severity.HIGH, "=HYPERLINK(\"http://evil\")"),
    ]
    findings_file = FindingsFile(
        generated_at=NOW, source="evidence/LAB", findings=findings,
        policies=[{"id": "SO-W10", "title": "worker certificate is valid", "description": f"desc {HOSTILE}",
                   "references": ["javascript:alert(2)", "sql-docs deal-with-certificates"],
                   "remediation": "rotate-worker-certificate", "severity": "high", "scope": "worker"}],
    )
    return ReportContext(snapshot=snapshot, findings=findings_file, now=NOW)
