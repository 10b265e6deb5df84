"""What each plan action may carry: one strict parameter model per action, and nothing else runs.

A plan is reviewed as a table and applied later, possibly after someone edited the file. So the file is
never trusted as free-form data: the parameters of a step are validated as the model of its action
(unknown fields refused, no type coercion, every value against the pattern the agent would apply), and
the review table, the readable plan and the agent request are all derived from these models. A value
that is not in a model cannot reach a node, and a value that is in one is shown to the reviewer.

A step's ``expect`` (:data:`Expected`, one kind per sort of state) is the node state the planner saw and
relies on: the value a setting had, the certificate a binding served, a registry value, a start mode. It
is data, never sent to a node: the review table shows it as "before", and the executor compares it with a
fresh collection to tell a stale step from a done one (:mod:`scaleguard.remediators.drift`).

Values only the live node knows — the settings file's path, the exact service name — are left out of
plans made from evidence and filled in at apply time by :func:`scaleguard.remediators.resolve.resolve`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Annotated, Any, Literal

from cryptography import x509
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, model_validator

from scaleguard.rules.account import worker_account_problem
from scaleguard.rules.host import is_ip, valid_host
from scaleguard.rules.thumbprint import is_clean

Role = Literal["master", "worker"]
Thumbprint = Annotated[str, StringConstraints(pattern=r"^[0-9A-F]{40}$")]
SERVICE_NAME = r"^SSISScaleOut(Master|Worker)1[4-9]0$"
ServiceName = Annotated[str, StringConstraints(pattern=SERVICE_NAME)]
AppId = Annotated[
    str,
    StringConstraints(pattern=r"^\{[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}\}$"),
]
IpPort = Annotated[str, StringConstraints(pattern=r"^((\d{1,3}\.){3}\d{1,3}|\[[0-9A-Fa-f:.]{2,45}\]):\d{1,5}$")]
Base64Text = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9+/]+={0,2}$", max_length=65536)]
NodeText = Annotated[str, StringConstraints(max_length=4096)]
"""Free text a node reported (a subject, a service state): shown escaped, never sent anywhere."""

MASTER_SETTINGS = ("SSLCertThumbprint",)
WORKER_SETTINGS = ("MasterHttpsCertThumbprint", "WorkerHttpsCertThumbprint")
ThumbprintSetting = Literal["SSLCertThumbprint", "MasterHttpsCertThumbprint", "WorkerHttpsCertThumbprint"]


def _host(value: str) -> str:
    if not valid_host(value):
        raise ValueError("is not a host name or an IP address")
    return value


def _ip(value: str) -> str:
    if not is_ip(value):
        raise ValueError("is not an IP address")
    return value


def _account(value: str) -> str:
    problem = worker_account_problem(value)
    if problem is not None:
        raise ValueError(f"{value!r} {problem}")
    return value


HostName = Annotated[str, AfterValidator(_host)]
IpAddress = Annotated[str, AfterValidator(_ip)]
WorkerAccount = Annotated[str, AfterValidator(_account)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class StepRef(_Strict):
    """A value an earlier step returns (``thumbprint`` or ``der_b64`` of a certificate it created)."""

    from_step: Annotated[str, StringConstraints(pattern=r"^s\d{3,6}$")]
    field: Literal["thumbprint", "der_b64"]

    def key(self) -> str:
        return f"<{self.field} of {self.from_step}>"


class SecretRef(_Strict):
    """A secret resolved only when the step runs: an environment variable, or a prompt."""

    secret_env: Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")] | None = None
    secret_prompt: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9 ._-]{1,80}$")] | None = None

    @model_validator(mode="after")
    def _one_source(self) -> SecretRef:
        if (self.secret_env is None) == (self.secret_prompt is None):
            raise ValueError("a secret reference names exactly one of secret_env and secret_prompt")
        return self


class FileRef(_Strict):
    """A local file sent (base64) only when the step runs, so plan.json stays small and reviewable."""

    local_file: Annotated[str, StringConstraints(min_length=1, max_length=4096, pattern=r"^[^\x00-\x1f]+$")]


ThumbOrRef = Thumbprint | StepRef


class CertificateTrouble(ValueError):
    """A certificate in a plan that must not go where the step puts it."""


def ca_reason(der: bytes) -> str | None:
    """Why the certificate is a CA (basicConstraints CA:TRUE, keyCertSign), or None for an end entity."""
    cert = x509.load_der_x509_certificate(der)
    reasons = []
    try:
        if cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            reasons.append("basicConstraints CA:TRUE")
    except x509.ExtensionNotFound:
        pass
    try:
        if cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign:
            reasons.append("key usage keyCertSign")
    except x509.ExtensionNotFound:
        pass
    return ", ".join(reasons) or None


def checked_der(der_b64: str, thumbprint: str, store: str) -> None:
    """The DER parses, is the certificate ``thumbprint`` names, and is no CA when it goes into Root."""
    try:
        der = base64.b64decode(der_b64, validate=True)
        reason = ca_reason(der)
    except (binascii.Error, ValueError) as exc:
        raise CertificateTrouble(f"der_b64 is not a DER certificate ({exc})") from exc
    actual = hashlib.sha1(der).hexdigest().upper()  # noqa: S324 - Windows' thumbprint is SHA-1
    if actual != thumbprint:
        raise CertificateTrouble(f"der_b64 is certificate {actual}, not the thumbprint {thumbprint}")
    if reason is not None and store == "Root":
        raise CertificateTrouble(
            f"certificate {thumbprint} is a CA ({reason}); a plan never imports a CA into a Root store"
        )


def created_problems(result: dict[str, Any] | None, store: str) -> list[str]:
    """Why a node's answer to ``create_certificate`` cannot be relied on (later steps import its DER and
    bind its thumbprint, and undoing it removes that thumbprint): they must agree, and a CA never goes into
    Root. Used for ``--apply`` answers and runbook results alike."""
    if result is None:
        return ["the created certificate is missing from the result"]
    thumbprint, der_b64 = result.get("thumbprint"), result.get("der_b64")
    if not isinstance(thumbprint, str) or not isinstance(der_b64, str) or len(der_b64) > 65536:
        return ["the result does not carry the created certificate's thumbprint and DER"]
    if result.get("store") != store:
        return [f"the certificate was reported in {result.get('store')!r}, the step makes it in {store}"]
    if not is_clean(thumbprint) or thumbprint != thumbprint.upper():  # as Windows reports it: 40 upper-case hex
        return [f"{thumbprint[:60]!r} is not a thumbprint"]
    try:
        checked_der(der_b64, thumbprint, store)
    except CertificateTrouble as exc:
        return [str(exc)]
    return []


class _Params(_Strict):
    def agent_fields(self) -> dict[str, Any]:
        """What the node's agent receives for this step (``expect`` and resolved-later fields excluded)."""
        return {
            name: getattr(self, name) for name in type(self).model_fields if name not in ("expect", "role", "config")
        }


class CreateCertificate(_Params):
    """A self-signed certificate made on the node (its key never leaves it)."""

    store: Literal["Root", "My"]
    common_names: list[HostName] = Field(min_length=1, max_length=32)
    san_dns: list[HostName] = Field(max_length=32)
    san_ip: list[IpAddress] = Field(max_length=32)
    key_bits: int = Field(ge=2048, le=16384)
    hash: Literal["sha256", "sha1"]
    valid_days: int = Field(ge=1, le=3650)
    friendly_name: Literal["SSIS Scale Out Master", "SSIS Scale Out Worker"]


class ImportCertificate(_Params):
    """The public part of a certificate into a store (trust only: no key travels)."""

    store: Literal["Root"]
    thumbprint: ThumbOrRef
    der_b64: Base64Text | StepRef

    @model_validator(mode="after")
    def _certificate(self) -> ImportCertificate:
        if isinstance(self.thumbprint, StepRef) or isinstance(self.der_b64, StepRef):
            if not (
                isinstance(self.thumbprint, StepRef)
                and isinstance(self.der_b64, StepRef)
                and self.thumbprint.from_step == self.der_b64.from_step
                and self.thumbprint.field == "thumbprint"
                and self.der_b64.field == "der_b64"
            ):
                raise ValueError("thumbprint and der_b64 must both be references to the same created certificate")
            return self
        checked_der(self.der_b64, self.thumbprint, self.store)
        return self


class ImportPfx(_Params):
    """An enterprise certificate with its key (``--master-pfx``); the file and password by reference."""

    store: Literal["Root"]
    thumbprint: Thumbprint
    pfx: FileRef
    password: SecretRef


class CopyCertificate(_Params):
    """A certificate already on the node (with its key) also into Root; the DER is the plan's copy."""

    from_store: Literal["My"]
    to_store: Literal["Root"]
    thumbprint: Thumbprint
    der_b64: Base64Text

    @model_validator(mode="after")
    def _certificate(self) -> CopyCertificate:
        checked_der(self.der_b64, self.thumbprint, self.to_store)
        return self

    def agent_fields(self) -> dict[str, Any]:
        return {"from_store": self.from_store, "to_store": self.to_store, "thumbprint": self.thumbprint}


class RemoveCertificate(_Params):
    """An old worker certificate out of My (backed up on the node, key kept)."""

    store: Literal["My"]
    thumbprint: Thumbprint


class SetBinding(_Params):
    """The master's HTTP.sys binding serves a certificate from Root."""

    ip_port: IpPort
    cert_hash: ThumbOrRef
    cert_store: Literal["Root"]
    app_id: AppId


class WriteConfig(_Params):
    """One thumbprint setting of the Scale Out settings file of ``config``'s role (a backup is kept).

    ``path`` is never in a plan: :func:`~scaleguard.remediators.resolve.resolve` takes it from the fresh
    collection of the node.
    """

    config: Role
    setting: ThumbprintSetting
    value: ThumbOrRef
    path: NodeText | None = None

    @model_validator(mode="after")
    def _setting_of_config(self) -> WriteConfig:
        allowed = MASTER_SETTINGS if self.config == "master" else WORKER_SETTINGS
        if self.setting not in allowed:
            raise ValueError(f"{self.setting} is not a setting of the {self.config} settings file")
        return self

    def agent_fields(self) -> dict[str, Any]:
        return {"path": self.path, "role": self.config, "setting": self.setting, "value": self.value}


class SetMasterEndpoint(_Params):
    """A worker's ``MasterEndpoint`` becomes ``https://host:port`` (edited like :class:`WriteConfig`)."""

    host: HostName
    port: int = Field(ge=1, le=65535)
    trailing_slash: bool = False
    path: NodeText | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}{'/' if self.trailing_slash else ''}"

    def agent_fields(self) -> dict[str, Any]:
        return {"path": self.path, "role": "worker", "setting": "MasterEndpoint", "value": self.url}


class GrantKeyRead(_Params):
    """The worker service account may read the worker certificate's private key."""

    store: Literal["My"]
    thumbprint: ThumbOrRef
    account: WorkerAccount


class _ServiceParams(_Params):
    role: Role
    name: ServiceName | None = Field(default=None, description="None: the live node's service of role")

    @model_validator(mode="after")
    def _name_of_role(self) -> _ServiceParams:
        if self.name is not None and not self.name.lower().startswith(f"ssisscaleout{self.role}"):
            raise ValueError(f"{self.name} is not the Scale Out {self.role} service")
        return self


class SetServiceStartMode(_ServiceParams):
    """The service starts automatically."""

    mode: Literal["Automatic"]


class StartService(_ServiceParams):
    """Start the service (it is set to start automatically, or a finding asked for it)."""


class RestartService(_ServiceParams):
    """Restart the service if it runs, so it picks up a changed setting, certificate or key."""


class SetSchannelValue(_Params):
    """``ClientAuthTrustMode`` = 2 (the documented SO-M11 fix that leaves Root as it is)."""

    name: Literal["ClientAuthTrustMode"]
    value: Literal[2]


PARAMS: dict[str, type[_Params]] = {
    "create_certificate": CreateCertificate,
    "import_certificate": ImportCertificate,
    "import_pfx": ImportPfx,
    "copy_certificate": CopyCertificate,
    "remove_certificate": RemoveCertificate,
    "set_binding": SetBinding,
    "write_config": WriteConfig,
    "set_master_endpoint": SetMasterEndpoint,
    "grant_key_read": GrantKeyRead,
    "set_service_start_mode": SetServiceStartMode,
    "start_service": StartService,
    "restart_service": RestartService,
    "set_schannel_value": SetSchannelValue,
}
"""Every action a plan may hold, with its parameter model."""

AGENT_OP = {action: action for action in PARAMS} | {"set_master_endpoint": "write_config"}
"""The agent operation that carries out each action (an endpoint is a settings-file edit)."""

ActionParams = (
    CreateCertificate
    | ImportCertificate
    | ImportPfx
    | CopyCertificate
    | RemoveCertificate
    | SetBinding
    | WriteConfig
    | SetMasterEndpoint
    | GrantKeyRead
    | SetServiceStartMode
    | StartService
    | RestartService
    | SetSchannelValue
)
ServiceParams = SetServiceStartMode | StartService | RestartService


class SettingWas(_Strict):
    """A settings-file value as the plan saw it (None: absent)."""

    kind: Literal["setting"] = "setting"
    role: Role
    setting: Literal["SSLCertThumbprint", "MasterHttpsCertThumbprint", "WorkerHttpsCertThumbprint", "MasterEndpoint"]
    value: NodeText | StepRef | None


class BindingWas(_Strict):
    """The certificate an HTTP.sys binding served as the plan saw it (None: no binding)."""

    kind: Literal["binding"] = "binding"
    ip_port: IpPort
    cert_hash: NodeText | StepRef | None
    cert_store: NodeText | None = None
    app_id: NodeText | None = None


class SchannelWas(_Strict):
    kind: Literal["schannel"] = "schannel"
    name: Literal["ClientAuthTrustMode", "SendTrustedIssuerList"]
    value: int | None


class StartModeWas(_Strict):
    kind: Literal["start_mode"] = "start_mode"
    name: NodeText
    mode: NodeText | None


Expected = Annotated[SettingWas | BindingWas | SchannelWas | StartModeWas, Field(discriminator="kind")]
"""What a step expects to find before it runs: when the node holds neither this nor the step's target,
someone changed it since the plan was made and the step's unit stops as stale (apply's drift check)."""


def expect_fits(expect: SettingWas | BindingWas | SchannelWas | StartModeWas, params: _Params) -> bool:
    """``expect`` describes the very state ``params`` change (a plan cannot pair a step with another's)."""
    if isinstance(expect, SettingWas):
        if isinstance(params, WriteConfig):
            return expect.role == params.config and expect.setting == params.setting
        return isinstance(params, SetMasterEndpoint) and (expect.role, expect.setting) == ("worker", "MasterEndpoint")
    if isinstance(expect, BindingWas):
        return isinstance(params, SetBinding) and expect.ip_port == params.ip_port
    if isinstance(expect, SchannelWas):
        return isinstance(params, SetSchannelValue) and expect.name == params.name
    return isinstance(params, SetServiceStartMode)


def step_refs(params: _Params) -> list[StepRef]:
    return [value for name in type(params).model_fields if isinstance(value := getattr(params, name), StepRef)]
