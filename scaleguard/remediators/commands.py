"""The documented command each step corresponds to, as an operator would type it on the node.

Microsoft's procedure ("Deal with certificates in SSIS Scale Out") is written in MakeCert, netsh,
certmgr and winhttpcertcfg commands; showing each step in those words lets a reviewer check the plan
against the page and redo any step by hand. These strings are for people only: the agent never runs
them (it receives the same values as JSON data).
"""

from __future__ import annotations


def makecert(common_names: list[str], *, store: str, file_name: str, hash_name: str, key_bits: int) -> str:
    names = ";".join(f"CN={n}" for n in common_names)
    return (
        f'MakeCert.exe -n "{names}" {file_name} -r -ss {store} -sr LocalMachine '
        f"-a {hash_name} -len {key_bits} -sky exchange"
    )


def import_certificate(store: str, file_name: str) -> str:
    return f"certutil -addstore {store} {file_name}"


def import_pfx(store: str, file_name: str) -> str:
    return f"certutil -importPFX {store} {file_name}"


def copy_certificate(source: str, target: str, thumbprint: str) -> str:
    return (
        f"certutil -store {source} {thumbprint} (export) ; certutil -addstore {target} <exported .cer> ; "
        f"certutil -repairstore {target} {thumbprint}"
    )


def remove_certificate(store: str, thumbprint: str) -> str:
    return f"certmgr.exe /del /c /sha1 {thumbprint} /s /r localmachine {store}"


def restore_certificate(store: str, thumbprint: str) -> str:
    return f"certutil -addstore {store} <backup .cer> ; certutil -repairstore {store} {thumbprint}"


def set_binding(ip_port: str, cert_hash: str, store: str, app_id: str, *, existing: bool) -> str:
    add = f"netsh http add sslcert ipport={ip_port} certhash={cert_hash} certstorename={store} appid={app_id}"
    return f"netsh http delete sslcert ipport={ip_port} ; {add}" if existing else add


def delete_binding(ip_port: str) -> str:
    return f"netsh http delete sslcert ipport={ip_port}"


def write_config(path: str, setting: str, value: str) -> str:
    return f"update {setting} in {path} to {value} (a backup is kept on the node)"


def restore_file(path: str) -> str:
    return f"copy the backup back over {path}"


def grant_key_read(subject: str, account: str) -> str:
    return f"winhttpcertcfg.exe -g -c LOCAL_MACHINE\\My -s {subject} -a {account}"


def set_start_mode(service: str, mode: str) -> str:
    return f"Set-Service -Name {service} -StartupType {mode}"


def start_service(service: str) -> str:
    return f"sc start {service}"


def stop_service(service: str) -> str:
    return f"sc stop {service}"


def restart_service(service: str) -> str:
    return f"Restart-Service -Name {service}"


SCHANNEL_KEY = "HKLM\\SYSTEM\\CurrentControlSet\\Control\\SecurityProviders\\SCHANNEL"


def set_schannel_value(name: str, value: int) -> str:
    return f"reg add {SCHANNEL_KEY} /v {name} /t REG_DWORD /d {value} /f"


def delete_schannel_value(name: str) -> str:
    return f"reg delete {SCHANNEL_KEY} /v {name} /f"
