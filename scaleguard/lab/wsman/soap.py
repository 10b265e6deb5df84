"""WS-Management envelopes: reading what pywinrm sends, writing what Windows answers.

Only what clients rely on is modelled: the ``ShellId`` selector *and* ``rsp:Shell/rsp:ShellId`` on Create,
``RelatesTo`` echoed on every answer (pypsrp checks it everywhere, pywinrm on Signal and Delete), base64
streams with a ``Name``, ``CommandState/Done`` plus ``ExitCode``, and faults shaped like a real Windows 2016
capture so ``WSManFaultError`` gets every code.
"""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass, field
from xml.etree.ElementTree import Element
from xml.sax.saxutils import escape

import defusedxml.ElementTree as SafeET

SHELL_NS = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell"
SHELL_URI = f"{SHELL_NS}/cmd"
TRANSFER = "http://schemas.xmlsoap.org/ws/2004/09/transfer"
ACTION_CREATE = f"{TRANSFER}/Create"
ACTION_DELETE = f"{TRANSFER}/Delete"
ACTION_COMMAND = f"{SHELL_NS}/Command"
ACTION_SEND = f"{SHELL_NS}/Send"
ACTION_RECEIVE = f"{SHELL_NS}/Receive"
ACTION_SIGNAL = f"{SHELL_NS}/Signal"
FAULT_ACTION = "http://schemas.dmtf.org/wbem/wsman/1/wsman/fault"

# WSManFault codes (wsmerror.h) the lab raises.
OPERATION_TIMEOUT = 2150858793
SHELL_NOT_FOUND = 2150858843
SCHEMA_VALIDATION = 2150858817
QUOTA_MAX_OPERATIONS = 0x803381A6
ACTION_NOT_SUPPORTED = 2150858770


class SoapError(ValueError):
    """The request is not an envelope the lab understands (answered with a SOAP fault)."""


@dataclass
class WsmanRequest:
    action: str
    message_id: str
    shell_id: str | None = None
    operation_timeout_s: float = 60.0
    options: dict[str, str] = field(default_factory=dict)
    body: Element | None = None

    def find(self, local_name: str) -> Element | None:
        if self.body is None:
            return None
        return next((e for e in self.body.iter() if _local(e.tag) == local_name), None)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def parse_request(data: bytes) -> WsmanRequest:
    try:
        root = SafeET.fromstring(data)
    except Exception as exc:  # defusedxml raises ParseError or its own DTD/entity errors
        raise SoapError(f"not XML: {exc}") from exc
    header = next((e for e in root if _local(e.tag) == "Header"), None)
    body = next((e for e in root if _local(e.tag) == "Body"), None)
    if header is None:
        raise SoapError("no SOAP header")
    values: dict[str, str] = {}
    options: dict[str, str] = {}
    shell_id = None
    for element in header.iter():
        name = _local(element.tag)
        if name in ("Action", "MessageID", "OperationTimeout"):
            values[name] = (element.text or "").strip()
        elif name == "Selector" and element.get("Name") == "ShellId":
            shell_id = (element.text or "").strip()
        elif name == "Option" and element.get("Name"):
            options[str(element.get("Name"))] = (element.text or "").strip()
    if "Action" not in values or "MessageID" not in values:
        raise SoapError("Action and MessageID are required")
    return WsmanRequest(
        action=values["Action"],
        message_id=values["MessageID"],
        shell_id=shell_id,
        operation_timeout_s=_duration(values.get("OperationTimeout")),
        options=options,
        body=body,
    )


def _duration(value: str | None) -> float:
    """``PT20S`` / ``PT0.5S`` / ``PT1M`` → seconds (default 60 s, Windows' MaxTimeoutms)."""
    if not value or not value.startswith("PT"):
        return 60.0
    seconds, number = 0.0, ""
    for ch in value[2:]:
        if ch.isdigit() or ch == ".":
            number += ch
            continue
        scale = {"H": 3600.0, "M": 60.0, "S": 1.0}.get(ch)
        if scale is None or not number:
            return 60.0
        seconds += float(number) * scale
        number = ""
    return seconds or 60.0


_ENVELOPE = (
    '<s:Envelope xml:lang="en-US" xmlns:s="http://www.w3.org/2003/05/soap-envelope" '
    'xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" '
    'xmlns:x="http://schemas.xmlsoap.org/ws/2004/09/transfer" '
    'xmlns:w="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd" '
    'xmlns:rsp="http://schemas.microsoft.com/wbem/wsman/1/windows/shell" '
    'xmlns:p="http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd">'
    "<s:Header><a:Action>{action}</a:Action><a:MessageID>uuid:{message_id}</a:MessageID>"
    "<a:To>http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</a:To>"
    "<a:RelatesTo>{relates_to}</a:RelatesTo></s:Header><s:Body>{body}</s:Body></s:Envelope>"
)


def envelope(request: WsmanRequest, action: str, body: str) -> bytes:
    return _ENVELOPE.format(
        action=action, message_id=str(uuid.uuid4()).upper(), relates_to=escape(request.message_id), body=body
    ).encode("utf-8")


def create_response(request: WsmanRequest, shell_id: str, address: str, owner: str) -> bytes:
    body = (
        f"<x:ResourceCreated><a:Address>{escape(address)}</a:Address><a:ReferenceParameters>"
        f"<w:ResourceURI>{SHELL_URI}</w:ResourceURI><w:SelectorSet>"
        f'<w:Selector Name="ShellId">{shell_id}</w:Selector></w:SelectorSet></a:ReferenceParameters>'
        f"</x:ResourceCreated><rsp:Shell><rsp:ShellId>{shell_id}</rsp:ShellId>"
        f"<rsp:ResourceUri>{SHELL_URI}</rsp:ResourceUri><rsp:Owner>{escape(owner)}</rsp:Owner>"
        "<rsp:ClientIP>127.0.0.1</rsp:ClientIP><rsp:IdleTimeOut>PT7200.000S</rsp:IdleTimeOut>"
        "<rsp:InputStreams>stdin</rsp:InputStreams><rsp:OutputStreams>stdout stderr</rsp:OutputStreams>"
        "<rsp:ShellRunTime>P0DT0H0M0S</rsp:ShellRunTime><rsp:ShellInactivity>P0DT0H0M0S</rsp:ShellInactivity>"
        "</rsp:Shell>"
    )
    return envelope(request, f"{TRANSFER}/CreateResponse", body)


def command_response(request: WsmanRequest, command_id: str) -> bytes:
    body = f"<rsp:CommandResponse><rsp:CommandId>{command_id}</rsp:CommandId></rsp:CommandResponse>"
    return envelope(request, f"{SHELL_NS}/CommandResponse", body)


def empty_response(request: WsmanRequest, name: str) -> bytes:
    """SendResponse / SignalResponse (an empty element) and DeleteResponse (an empty body)."""
    if name == "DeleteResponse":
        return envelope(request, f"{TRANSFER}/DeleteResponse", "")
    return envelope(request, f"{SHELL_NS}/{name}", f"<rsp:{name}/>")


def receive_response(
    request: WsmanRequest, command_id: str, stdout: bytes, stderr: bytes, exit_code: int
) -> bytes:
    """The final chunk: all output, End markers, ``CommandState/Done`` and the exit code."""
    parts = ["<rsp:ReceiveResponse>"]
    for name, data in (("stdout", stdout), ("stderr", stderr)):
        if data:
            encoded = base64.b64encode(data).decode()
            parts.append(f'<rsp:Stream Name="{name}" CommandId="{command_id}">{encoded}</rsp:Stream>')
        parts.append(f'<rsp:Stream Name="{name}" CommandId="{command_id}" End="true"></rsp:Stream>')
    parts.append(
        f'<rsp:CommandState CommandId="{command_id}" State="{SHELL_NS}/CommandState/Done">'
        f"<rsp:ExitCode>{exit_code}</rsp:ExitCode></rsp:CommandState></rsp:ReceiveResponse>"
    )
    return envelope(request, f"{SHELL_NS}/ReceiveResponse", "".join(parts))


_FAULT_SUBCODES = {
    OPERATION_TIMEOUT: ("s:Receiver", "w:TimedOut"),
    SHELL_NOT_FOUND: ("s:Sender", "w:InvalidSelectors"),
    SCHEMA_VALIDATION: ("s:Sender", "w:SchemaValidationError"),
    QUOTA_MAX_OPERATIONS: ("s:Receiver", "w:QuotaLimit"),
    ACTION_NOT_SUPPORTED: ("s:Sender", "a:ActionNotSupported"),
}


def fault(
    request: WsmanRequest | None, code: int, reason: str, machine: str, *, wmi_error: int | None = None
) -> bytes:
    """A SOAP fault (sent with HTTP 500); ``wmi_error`` adds the MSFT_WmiError that quota faults carry."""
    value, subcode = _FAULT_SUBCODES.get(code, ("s:Receiver", "w:InternalError"))
    wmi = ""
    if wmi_error is not None:
        wmi = (
            '<p:MSFT_WmiError xmlns:p="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/MSFT_WmiError" '
            'xmlns:cim="http://schemas.dmtf.org/wbem/wscim/1/common">'
            f"<p:Message>{escape(reason)}</p:Message><p:error_Code>{wmi_error}</p:error_Code>"
            "<p:error_Type>HRESULT</p:error_Type>"
            "<p:error_WinDomain>Windows Remote Management</p:error_WinDomain>"
            "</p:MSFT_WmiError>"
        )
    body = (
        f"<s:Fault><s:Code><s:Value>{value}</s:Value><s:Subcode><s:Value>{subcode}</s:Value></s:Subcode></s:Code>"
        f'<s:Reason><s:Text xml:lang="en-US">{escape(reason)}</s:Text></s:Reason><s:Detail>'
        f'<f:WSManFault xmlns:f="http://schemas.microsoft.com/wbem/wsman/1/wsmanfault" Code="{code}" '
        f'Machine="{escape(machine)}"><f:Message>{escape(reason)}</f:Message></f:WSManFault>{wmi}</s:Detail></s:Fault>'
    )
    if request is None:
        request = WsmanRequest(action="", message_id="uuid:00000000-0000-0000-0000-000000000000")
    return envelope(request, FAULT_ACTION, body)
