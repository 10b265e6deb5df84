"""Real certificates for the collector tests, made once per session (RSA keys are the slow part)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from cryptography.utils import CryptographyDeprecationWarning

from scaleguard.collectors.parsers import certs as cert_parser
from scaleguard.lab.certs import CertSpec, IssuedCertificate, make_certificate

# The service rows the collector tests write into services.json (a healthy Scale Out 2019 node).
MASTER_SERVICE = {
    "Name": "SSISScaleOutMaster150",
    "State": "Running",
    "StartMode": "Auto",
    "StartName": "NT Service\\SSISScaleOutMaster150",
}
WORKER_ACCOUNT = "NT Service\\SSISScaleOutWorker150"


@dataclass(frozen=True)
class Pki:
    master: (
        IssuedCertificate  # SHA-1, two CN attributes like the documented New-SelfSignedCertificate/MakeCert
    )
    worker: IssuedCertificate  # SAN DNS + IP, like the documented worker certificate
    worker2: IssuedCertificate
    ca: IssuedCertificate
    issued: IssuedCertificate  # signed by ``ca``: not self-signed
    md5: IssuedCertificate
    negative: IssuedCertificate  # serial -12345, as MakeCert could produce
    ec: IssuedCertificate
    weak: IssuedCertificate  # RSA-1024
    semicolon_cn: IssuedCertificate  # one CN attribute holding "name;CN=ip"
    impostor: IssuedCertificate  # issuer name == subject name, but signed by ``ca``'s key


@pytest.fixture(scope="session")
def pki() -> Pki:
    with warnings.catch_warnings():
        # the lab itself loads its negative-serial certificate; that warning is not the reader's
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        ca = make_certificate(CertSpec(("Contoso Root CA",), key_seed=3, ca=True))
        same_name = make_certificate(CertSpec(("Lookalike",), key_seed=4, ca=True))
        impostor = make_certificate(CertSpec(("Lookalike",), key_seed=5), issuer=same_name)
        return Pki(
            master=make_certificate(CertSpec(("MASTER01", "10.0.2.4"), hash="sha1", key_seed=1)),
            worker=make_certificate(
                CertSpec(
                    ("WORKER01",),
                    san_dns=("worker01.corp.example",),
                    san_ip=("10.0.2.8", "fd00::8"),
                    hash="sha1",
                    key_seed=2,
                )
            ),
            worker2=make_certificate(CertSpec(("WORKER02",), hash="sha1", key_seed=6)),
            ca=ca,
            issued=make_certificate(CertSpec(("app.corp.example",), key_seed=7), issuer=ca),
            md5=make_certificate(CertSpec(("LEGACY01",), hash="md5", key_seed=8)),
            negative=make_certificate(CertSpec(("NEGATIVE01",), serial=-12345, key_seed=9)),
            ec=make_certificate(CertSpec(("EC01",), key_type="ec", key_seed=10)),
            weak=make_certificate(CertSpec(("WEAK01",), key_size=1024, key_seed=11)),
            semicolon_cn=make_certificate(CertSpec(("WorkerMachine;CN=10.0.2.9",), key_seed=12)),
            impostor=impostor,
        )


@pytest.fixture(autouse=True)
def _fresh_certificate_cache() -> Iterator[None]:
    """Each test sees the parser as a fresh process would (the cache is an optimisation, not state)."""
    cert_parser.clear_cache()
    yield
    cert_parser.clear_cache()
