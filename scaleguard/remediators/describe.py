"""A step in words — before, after, the documented command — derived only from the parameters that run.

What a reviewer signs off must be what the node receives: these texts are computed from the step's
validated parameters every time they are shown, never stored in the plan, so editing a parameter in
``plan.json`` changes the review table with it and no stored prose can disguise a step.

Microsoft's procedure ("Deal with certificates in SSIS Scale Out") is written in MakeCert, netsh,
certmgr and winhttpcertcfg commands; showing each step in those words lets a reviewer check the plan
against the page and redo any step by hand. The commands are for people only: the agent never runs
them (it receives the same values as JSON data).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from scaleguard.remediators.actions import (
    BindingWas,
    CopyCertificate,
    CreateCertificate,
    GrantKeyRead,
    ImportCertificate,
    ImportPfx,
    RemoveCertificate,
    RestartService,
    SchannelWas,
    SetBinding,
    SetMasterEndpoint,
    SetSchannelValue,
    SetServiceStartMode,
    SettingWas,
    StartModeWas,
    StartService,
    StepRef,
    WriteConfig,
)
from scaleguard.remediators.model import Step

CONFIG_FILE = {"master": "MasterSettings.config", "worker": "WorkerSettings.config"}
SCHANNEL_KEY = "HKLM\\SYSTEM\\CurrentControlSet\\Control\\SecurityProviders\\SCHANNEL"


@dataclass(frozen=True)
class StepText:
    before: str
    after: str
    command: str


def show(value: str | StepRef | None) -> str:
    if value is None:
        return "(none)"
    return value.key() if isinstance(value, StepRef) else value


def display(value: str | StepRef | None) -> str:
    """A setting value as a reviewer must see it: invisible characters (U+200E...) made visible."""
    if value is None:
        return "(absent)"
    if isinstance(value, StepRef):
        return value.key()
    shown = "".join(
        ch if ch.isprintable() and unicodedata.category(ch) not in ("Cf", "Zs") or ch == " " else f"\\u{ord(ch):04x}"
        for ch in value
    )
    return f"'{shown}'"


def service_of(params: SetServiceStartMode | StartService | RestartService) -> str:
    if params.name is not None:
        return params.name
    return f"SSISScaleOut{params.role.capitalize()}<version>"


def _write_config(path: str, setting: str, value: str) -> str:
    return f"update {setting} in {path} to {value} (a backup is kept on the node)"


def _setting_was(step: Step, setting: str) -> str:
    expect = step.expect
    if isinstance(expect, SettingWas):
        return f"{setting} = {display(expect.value)}"
    return f"{setting} as it is"


def describe(step: Step) -> StepText:  # noqa: PLR0911 - one branch per action
    p = step.params
    if isinstance(p, CreateCertificate):
        file_name = p.friendly_name.replace(" ", "") + ".cer"
        names = ";".join(f"CN={n}" for n in p.common_names)
        return StepText(
            f"no new {p.friendly_name.rsplit(' ', 1)[-1].lower()} certificate yet",
            f"new self-signed certificate {'; '.join('CN=' + n for n in p.common_names)}"
            f"{', SAN ' + ', '.join([*p.san_dns, *p.san_ip]) if p.san_dns or p.san_ip else ''}, RSA {p.key_bits}, "
            f"{p.hash}, {p.valid_days} days, in LocalMachine\\{p.store} with its key (created on this node)",
            f'MakeCert.exe -n "{names}" {file_name} -r -ss {p.store} -sr LocalMachine '
            f"-a {p.hash} -len {p.key_bits} -sky exchange",
        )
    if isinstance(p, ImportCertificate):
        return StepText(
            f"LocalMachine\\{p.store} lacks {show(p.thumbprint)}",
            f"LocalMachine\\{p.store} trusts {show(p.thumbprint)} (public part only)",
            f"certutil -addstore {p.store} {show(p.thumbprint)}.cer",
        )
    if isinstance(p, ImportPfx):
        return StepText(
            f"LocalMachine\\{p.store} without {p.thumbprint}",
            f"certificate {p.thumbprint} from {p.pfx.local_file} in LocalMachine\\{p.store} with its key "
            f"(password from {p.password.secret_env or p.password.secret_prompt})",
            f"certutil -importPFX {p.store} {p.pfx.local_file}",
        )
    if isinstance(p, CopyCertificate):
        return StepText(
            f"certificate {p.thumbprint} in LocalMachine\\{p.from_store} only",
            f"certificate {p.thumbprint} also in LocalMachine\\{p.to_store} (key association kept)",
            f"certutil -store {p.from_store} {p.thumbprint} (export) ; certutil -addstore {p.to_store} "
            f"<exported .cer> ; certutil -repairstore {p.to_store} {p.thumbprint}",
        )
    if isinstance(p, RemoveCertificate):
        return StepText(
            f"LocalMachine\\{p.store} holds {p.thumbprint}",
            "removed (key kept, backup on the node, restorable)",
            f"certmgr.exe /del /c /sha1 {p.thumbprint} /s /r localmachine {p.store}",
        )
    if isinstance(p, SetBinding):
        binding = step.expect if isinstance(step.expect, BindingWas) else None
        existing = binding is not None and (binding.cert_hash is not None or binding.app_id is not None)
        before = (
            f"{p.ip_port} → {show(binding.cert_hash)} "
            f"(store {binding.cert_store or '(null) = MY'}, appid {binding.app_id})"
            if binding is not None and existing
            else f"no SSL binding on {p.ip_port}"
            if binding is not None
            else f"{p.ip_port} as it is"
        )
        add = f"netsh http add sslcert ipport={p.ip_port} certhash={show(p.cert_hash)} "
        add += f"certstorename={p.cert_store} appid={p.app_id}"
        return StepText(
            before,
            f"{p.ip_port} → {show(p.cert_hash)} (store {p.cert_store}, appid {p.app_id})",
            f"netsh http delete sslcert ipport={p.ip_port} ; {add}" if existing or binding is None else add,
        )
    if isinstance(p, WriteConfig):
        return StepText(
            _setting_was(step, p.setting),
            f"{p.setting} = {display(p.value)}",
            _write_config(p.path or CONFIG_FILE[p.config], p.setting, show(p.value)),
        )
    if isinstance(p, SetMasterEndpoint):
        return StepText(
            _setting_was(step, "MasterEndpoint"),
            f"MasterEndpoint = {display(p.url)}",
            _write_config(p.path or CONFIG_FILE["worker"], "MasterEndpoint", p.url),
        )
    if isinstance(p, GrantKeyRead):
        subject = (
            f"<subject of the certificate {p.thumbprint.from_step} creates>"
            if isinstance(p.thumbprint, StepRef)
            else f"<subject of certificate {p.thumbprint}>"
        )
        return StepText(
            f"{p.account} cannot read the key of {show(p.thumbprint)}",
            f"{p.account} can read the key",
            f"winhttpcertcfg.exe -g -c LOCAL_MACHINE\\My -s {subject} -a {p.account}",
        )
    if isinstance(p, SetServiceStartMode):
        name = service_of(p)
        mode = step.expect.mode if isinstance(step.expect, StartModeWas) else None
        return StepText(
            f"{name} start mode {mode or 'unknown'}",
            f"{name} start mode {p.mode}",
            f"Set-Service -Name {name} -StartupType {p.mode}",
        )
    if isinstance(p, StartService):
        name = service_of(p)
        return StepText(f"{name} not running", f"{name} Running", f"sc start {name}")
    if isinstance(p, RestartService):
        name = service_of(p)
        return StepText(
            f"{name} running with the old state",
            f"{name} restarted if running (picks up the change)",
            f"Restart-Service -Name {name}",
        )
    assert isinstance(p, SetSchannelValue)
    schannel = step.expect if isinstance(step.expect, SchannelWas) else None
    return StepText(
        f"{p.name} = {'(absent)' if schannel.value is None else schannel.value}"
        if schannel is not None
        else f"{p.name} as it is",
        f"{p.name} = {p.value} (REG_DWORD); LocalMachine\\Root is left as it is; "
        "the master service must restart to pick it up",
        f"reg add {SCHANNEL_KEY} /v {p.name} /t REG_DWORD /d {p.value} /f",
    )
