"""Parsers shared by offline (evidence folder) and live (WinRM) collection: bytes or text in, snapshot
model objects out, never a file path. Both collectors hand the same raw material (config text,
certificate DER, netsh text, PowerShell JSON) to these functions, so a quirk fixed here is fixed for both.
"""

from scaleguard.collectors.parsers.certs import (
    CertificateParseError,
    load_certificates,
    load_certificates_with_notes,
    parse_certificate,
)
from scaleguard.collectors.parsers.config import (
    MASTER_SETTINGS,
    WORKER_SETTINGS,
    parse_config,
    parse_config_with_notes,
)
from scaleguard.collectors.parsers.host import host_from_json, schannel_from_json
from scaleguard.collectors.parsers.keys import KeyFact, apply_key_facts, key_facts_from_json
from scaleguard.collectors.parsers.netsh import NetshParseError, parse_sslcert, parse_sslcert_with_notes
from scaleguard.collectors.parsers.psjson import PowerShellJsonError, as_rows, loads_powershell_json
from scaleguard.collectors.parsers.services import services_from_json
from scaleguard.collectors.parsers.text import DecodedText, decode_text, encode_text

__all__ = [
    "MASTER_SETTINGS",
    "WORKER_SETTINGS",
    "CertificateParseError",
    "DecodedText",
    "KeyFact",
    "NetshParseError",
    "PowerShellJsonError",
    "apply_key_facts",
    "as_rows",
    "decode_text",
    "encode_text",
    "host_from_json",
    "key_facts_from_json",
    "load_certificates",
    "load_certificates_with_notes",
    "loads_powershell_json",
    "parse_certificate",
    "parse_config",
    "parse_config_with_notes",
    "parse_sslcert",
    "parse_sslcert_with_notes",
    "schannel_from_json",
    "services_from_json",
]
