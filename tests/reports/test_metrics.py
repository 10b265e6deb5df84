"""metrics.prom: OpenMetrics that prometheus_client parses (and the classic text parser node_exporter's
textfile collector uses), with the demo master certificate's not-after, findings counts and the audit's
completion time and duration."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_classic
from typer.testing import CliRunner

from scaleguard.cli.main import app
from scaleguard.findings.model import FindingsFile
from scaleguard.lab.scenario import demo_scenario
from scaleguard.snapshot.model import Snapshot


@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("metrics")
    evidence = demo_scenario(defects=True).write(root / "CONTOSO-SSIS")
    result = CliRunner().invoke(
        app, ["audit", "--evidence", str(evidence), "--out", str(root / "out")]
    )
    assert result.exit_code == 1, result.stderr
    return root / "out"


def _samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in parse_openmetrics(text):
        for sample in family.samples:
            assert sample.timestamp is None  # node_exporter refuses timestamps in text files
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def test_metrics_hold_the_master_certificate_not_after(audited: Path) -> None:
    text = (audited / "metrics.prom").read_text(encoding="utf-8")
    snapshot = Snapshot.read(audited / "snapshot.json")
    cluster = snapshot.clusters[0]
    master = cluster.masters[0]
    assert master.master_config is not None and master.root is not None
    thumbprint = master.master_config.settings["SSLCertThumbprint"].upper()
    cert = master.root.find(thumbprint)
    assert cert is not None
    samples = _samples(text)
    wanted = {"cluster": "CONTOSO-SSIS", "node": master.name, "role": "master", "store": "Root",
              "thumbprint": thumbprint}
    assert (wanted, cert.not_after.timestamp()) in samples["scaleguard_certificate_not_after_timestamp_seconds"]
    findings = FindingsFile.model_validate_json((audited / "findings.json").read_bytes())
    days = {tuple(sorted(labels.items())): v for labels, v in samples["scaleguard_certificate_days_left"]}
    expected_days = (cert.not_after - findings.generated_at).total_seconds() // 86400
    assert days[tuple(sorted(wanted.items()))] == expected_days
    # every copy a worker trusts is there too
    trusted = {labels["node"] for labels, _ in samples["scaleguard_certificate_not_after_timestamp_seconds"]
               if labels["thumbprint"] == thumbprint and labels["role"] == "master-trust"}
    assert trusted == {w.name for w in cluster.workers if w.root is not None and w.root.find(thumbprint)}


def test_findings_counts_match_findings_json(audited: Path) -> None:
    samples = _samples((audited / "metrics.prom").read_text(encoding="utf-8"))
    findings = FindingsFile.model_validate_json((audited / "findings.json").read_bytes())
    counted = {(labels["severity"], labels["status"]): value for labels, value in samples["scaleguard_findings"]}
    assert sum(counted.values()) == len(findings.findings)
    failing_critical = sum(1 for f in findings.findings if f.status == "fail" and f.severity == "critical")
    assert counted[("critical", "fail")] == failing_critical > 0
    assert counted[("info", "waived")] == 0  # every combination is present, zeros included


def test_audit_completion_time_and_duration(audited: Path) -> None:
    samples = _samples((audited / "metrics.prom").read_text(encoding="utf-8"))
    findings = FindingsFile.model_validate_json((audited / "findings.json").read_bytes())
    [(labels, completed)] = samples["scaleguard_audit_completion_timestamp_seconds"]
    [(_, duration)] = samples["scaleguard_audit_duration_seconds"]
    assert labels == {"cluster": "CONTOSO-SSIS"}
    assert 0 < duration < 120
    assert completed == pytest.approx(findings.generated_at.timestamp() + duration, abs=1e-3)
    assert completed <= datetime.now(UTC).timestamp()


def test_the_textfile_collector_format_reads_the_same_file(audited: Path) -> None:
    """node_exporter's textfile collector parses the classic text format; # UNIT / # EOF are comments."""
    text = (audited / "metrics.prom").read_text(encoding="utf-8")
    assert text.endswith("# EOF\n")
    classic = {(s.name, tuple(sorted(s.labels.items())), s.value) for f in parse_classic(text) for s in f.samples}
    openmetrics = {(n, tuple(sorted(lab.items())), v) for n, rows in _samples(text).items() for lab, v in rows}
    assert classic == openmetrics
    assert len(classic) == len([line for line in text.splitlines() if not line.startswith("#")])  # no duplicate


def test_the_readme_alert_rules_use_metrics_the_file_has(audited: Path) -> None:
    import re

    import yaml

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    block = next(b for b in readme.split("```yaml")[1:] if "alert:" in b).split("```")[0]
    rules = yaml.safe_load(block)["groups"][0]["rules"]
    names = set(_samples((audited / "metrics.prom").read_text(encoding="utf-8")))
    used = {name for rule in rules for name in re.findall(r"scaleguard_[a-z_]+", rule["expr"])}
    assert len(rules) >= 2 and used and used <= names
