"""What the agents do on Windows, pinned at the levels reachable without Windows: the scripts' text (each
fix names the .NET API or command it relies on, and the dangerous ones are gone), and the request/response
contract the Python side keeps with them (secrets outside the JSON, partial changes, null stores, waits).

Each test here is named in a row of ``docs/windows-conformance.md``.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from scaleguard.apply.inverse import inverse
from scaleguard.apply.journal import Journal
from scaleguard.apply.runner import Executor
from scaleguard.apply.transport import (
    AgentClient,
    OutcomeUnknown,
    PartialChange,
    action_payload,
    actions_script,
    agent_request,
    service_wait_s,
)
from scaleguard.collectors.agent import PAYLOAD_SEPARATOR, agent_script, payload_secret, split_payload
from scaleguard.remediators.model import Plan, Step, Unit
from scaleguard.remoting.channel import CommandResult, describe_stderr
from scaleguard.rules.account import BROAD_READERS, account_matches, canonical


def body(script: str, function: str) -> str:
    """The text of one PowerShell function (up to the next top-level function or section)."""
    start = script.index(f"function {function}")
    following = re.compile(r"^(function |# ---)", re.M)
    found = following.search(script, start + 1)
    return script[start : found.start() if found else len(script)]


def code(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


# --- finding 1: only the DACL of a key file is written ----------------------------------------------------


def test_key_read_writes_only_the_dacl() -> None:
    script = actions_script()
    assert (
        "[System.IO.File]::GetAccessControl($File, [System.Security.AccessControl.AccessControlSections]::Access)"
        in (body(script, "Get-KeyAcl"))
    )
    for function in ("Invoke-GrantKeyRead", "Invoke-RevokeKeyRead"):
        text = code(body(script, function))
        assert "Get-KeyAcl" in text and "[System.IO.File]::SetAccessControl(" in text
        assert "Get-Acl" not in text and "Set-Acl" not in text


# --- finding 3 and 5: partial changes and service waits -----------------------------------------------------


def test_binding_is_replaced_in_place_and_verified() -> None:
    text = code(body(actions_script(), "Invoke-SetBinding"))
    assert "$verb = 'update'" in text and "Get-Binding $ipPort" in text and "Stop-Partial" in text
    assert "delete" not in text and "[void]" not in text  # no delete-then-add gap, no silent re-add


def test_services_wait_with_a_timespan_never_forever() -> None:
    script = actions_script()
    assert "$Controller.WaitForStatus($Status, $Wait)" in body(script, "Wait-ServiceStatus")
    assert "[TimeSpan]::FromSeconds" in body(script, "Get-WaitSpan")
    lowered = code(script).lower()
    for cmdlet in ("start-service", "stop-service", "restart-service"):
        assert cmdlet not in lowered  # they wait without a limit
    for op in ("start_service", "stop_service", "restart_service"):
        assert agent_request({"op": op, "name": "S"}, 30)["wait_s"] == service_wait_s(30) == 12
    assert "wait_s" not in agent_request({"op": "set_binding"}, 30)
    assert service_wait_s(2) == 1 and service_wait_s(120) == 48  # two waits of a restart fit in the deadline


class Answering:
    """Stands in for HostChannel with one fixed answer."""

    def __init__(self, result: CommandResult) -> None:
        self.deadline = 0.0
        self.result = result
        self.sent: list[bytes] = []

    def run(self, command: str, stdin: bytes, *, idempotent: bool = True) -> CommandResult:
        self.sent.append(stdin)
        return self.result


def test_exit_code_3_is_a_partial_change_carrying_what_was_before() -> None:
    before = {"name": "SSISScaleOutWorker150", "was_running": False}
    stdout = json.dumps({"partial": True, "result": before}).encode()
    stderr = b"scaleguard fix agent: partial change: SSISScaleOutWorker150 did not reach Running within 12 s\r\n"
    client = AgentClient(Answering(CommandResult(stdout, stderr, 3)), timeout_s=30, name="W1")  # type: ignore[arg-type]
    with pytest.raises(PartialChange) as raised:
        client.request({"op": "start_service", "name": "SSISScaleOutWorker150"})
    assert raised.value.result == before and "did not reach Running within 12 s" in str(raised.value)
    assert inverse({"op": "start_service", "name": "SSISScaleOutWorker150"}, raised.value.result).requests == [
        {"op": "stop_service", "name": "SSISScaleOutWorker150"}
    ]


def test_exit_code_3_with_an_answer_too_deep_to_read_is_a_partial_change_that_could_not_say_what_was_before() -> None:
    client = AgentClient(Answering(CommandResult(b"[" * 100_000, b"", 3)), timeout_s=30, name="W1")  # type: ignore[arg-type]
    with pytest.raises(PartialChange) as raised:
        client.request({"op": "start_service", "name": "SSISScaleOutWorker150"})
    assert raised.value.result is None


@pytest.mark.parametrize(
    "stdout",
    [b"[" * 100_000, b'{"a":' * 50_000, b"1" * 5_000, b"not json", b"[1, 2]", b"{} {} {}"],
    ids=["brackets 100,000 deep", "objects 50,000 deep", "a 5,000-digit number", "text", "an array", "three"],
)
def test_an_answer_that_is_not_one_json_object_is_an_unknown_outcome(stdout: bytes) -> None:
    """Node data: whatever stdout holds, the action's outcome is unknown (rolled back as such), never an
    exception the executor does not expect (the deep ones raised RecursionError)."""
    client = AgentClient(Answering(CommandResult(stdout, b"", 0)), timeout_s=30, name="W1")  # type: ignore[arg-type]
    with pytest.raises(OutcomeUnknown, match="W1: the agent's answer is not"):
        client.request({"op": "start_service", "name": "SSISScaleOutWorker150"})


# --- finding 2: a binding that had no store is restored without one ----------------------------------------


def test_a_null_store_binding_is_restored_by_leaving_the_store_out() -> None:
    previous = {"ip_port": "0.0.0.0:8391", "cert_hash": "A" * 40, "app_id": "{x}", "cert_store": None}
    [request] = inverse({"op": "set_binding", "ip_port": "0.0.0.0:8391"}, {"previous": previous}).requests
    assert "cert_store" not in request
    text = code(body(actions_script(), "Get-BindingStore"))
    assert "if ($null -eq $property) { return $null }" in text and "must be Root or My, or left out" in text


# --- finding 4: certificate backups are serialized certificates ---------------------------------------------


def test_certificate_backup_is_a_serialized_cert_and_no_certutil() -> None:
    script = actions_script()
    assert "X509ContentType]::SerializedCert)" in body(script, "Invoke-RemoveCertificate")
    restore = body(script, "Invoke-RestoreCertificate")
    assert "GetCertContentType($bytes)" in restore and "Read-Backup $Request $backup" in restore
    assert "certutil" not in code(script).lower()


# --- finding 7: the PFX password never reaches a cmdlet or ConvertFrom-Json ---------------------------------


def test_the_pfx_password_travels_outside_the_json() -> None:
    request = {"op": "import_pfx", "store": "Root", "thumbprint": "A" * 40, "pfx_b64": "AAAA", "password": "P@ss'\""}
    _command, stdin = action_payload(request)
    _script, parsed = split_payload(stdin)
    assert "password" not in parsed and b"P@ss" not in stdin
    assert payload_secret(stdin) == "P@ss'\""
    assert stdin.count(PAYLOAD_SEPARATOR) == 2
    assert payload_secret(action_payload({"op": "read_file", "path": "p"})[1]) is None


def test_the_script_reads_the_secret_only_into_net_calls() -> None:
    script = actions_script()
    pfx = code(body(script, "Invoke-ImportPfx"))
    assert "[System.Security.Cryptography.X509Certificates.X509Certificate2]::new($bytes, $password" in pfx
    uses = [line.strip() for line in code(script).splitlines() if "$password" in line or "$ScaleguardSecret" in line]
    for line in uses:
        # assignment from .NET, or an argument to ::new - never a cmdlet or function parameter
        assert line.startswith(("$password =", "if ($null -ne $ScaleguardSecret)", "$probe =", "$cert =")), line
    assert "Get-Field $Request 'password'" not in script
    assert "$ScaleguardSecret = $p[2].Trim()" in agent_script("bootstrap.ps1")


# --- finding 8: backups live in a protected folder and are verified before a restore ------------------------


def test_backups_are_protected_and_verified() -> None:
    script = actions_script()
    folder = code(body(script, "New-ProtectedFolder"))
    assert "SetAccessRuleProtection($true, $false)" in folder and "CreateDirectory($Path, $security)" in folder
    trusted = code(body(script, "Test-TrustedFolder"))
    assert "GetOwner([System.Security.Principal.SecurityIdentifier])" in trusted and "ReparsePoint" in trusted
    assert "'S-1-5-18', 'S-1-5-32-544'" in script
    read = code(body(script, "Read-Backup"))
    assert "'backup_sha256'" in read and "(Get-Sha256 $bytes) -ne $recorded" in read
    assert "Read-Backup $Request $backup" in body(script, "Invoke-RestoreFile")


# --- finding 9: the config path is one of this node's own Binn files ---------------------------------------


def test_config_path_is_anchored_to_the_binn_folders_the_agent_finds() -> None:
    script = actions_script()
    text = code(body(script, "Get-ConfigPath"))
    assert "'^[A-Za-z]:[\\\\/]'" in text and "Get-BinnFolders" in text and "-ieq (Join-Path $binn $leaf)" in text
    assert "Microsoft SQL Server\\$version\\DTS\\Binn" in body(script, "Get-BinnFolders")
    assert "$SqlVersions = @('140', '150', '160')" in script


# --- finding 10: the built-in service accounts map to SIDs ---------------------------------------------------


def test_builtin_accounts_map_to_well_known_sids() -> None:
    script = actions_script()
    table = dict(re.findall(r"'([a-z .\\]+)' = '(S-1-5-\d+)'", script))
    assert table["localsystem"] == table["nt authority\\system"] == "S-1-5-18"
    assert table["localservice"] == table["local service"] == "S-1-5-19"
    assert table["networkservice"] == table["nt authority\\network service"] == "S-1-5-20"
    assert "$WellKnownAccounts[" in body(script, "Get-AccountSid")
    # the planner and the lab match accounts with the same table (rules.account)
    from scaleguard.rules.account import WELL_KNOWN_NAMES, account_matches, canonical

    assert set(table) == set(WELL_KNOWN_NAMES)
    assert all(canonical(name) == sid.lower() for name, sid in table.items())
    assert account_matches("NT AUTHORITY\\SYSTEM", "LocalSystem") and account_matches("S-1-5-20", "NetworkService")
    assert not account_matches("NT AUTHORITY\\LOCAL SERVICE", "LocalSystem")
    assert "Get-AccountSid $account" in body(script, "Get-KeyTarget")


# --- findings 11, 13, 14, 15 ---------------------------------------------------------------------------------


def test_netsh_output_is_lines_with_the_exit_code_checked() -> None:
    collect = code(body(agent_script(), "Get-Bindings"))
    assert "Out-String" not in collect and "$LASTEXITCODE -ne 0" in collect and '-join "`r`n"' in collect
    netsh = code(body(actions_script(), "Invoke-Netsh"))
    assert "Out-String" not in netsh and "$code = $LASTEXITCODE" in netsh


def test_no_stderr_redirection_under_stop() -> None:
    for script in (actions_script(), agent_script()):
        for match in re.finditer(r"2>&1", code(script)):
            function = code(script)[: match.start()].rsplit("function ", 1)[-1]
            assert "$ErrorActionPreference = 'Continue'" in function, function[:60]


def test_warnings_are_silenced_and_plain_text_survives_clixml() -> None:
    for script in (actions_script(), agent_script(), agent_script("bootstrap.ps1")):
        assert "$WarningPreference = 'SilentlyContinue'" in script
    stderr = (
        b'#< CLIXML\r\n<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04">'
        b'<S S="Warning">The key is weak_x000D__x000A_</S></Objs>'
        b"scaleguard fix agent: the certificate is not in LocalMachine\\Root\r\n"
    )
    assert describe_stderr(stderr) == "scaleguard fix agent: the certificate is not in LocalMachine\\Root"
    only_warning = b'#< CLIXML\r\n<Objs Version="1.1.0.1"><S S="Warning">careful &amp; slow</S></Objs>'
    assert describe_stderr(only_warning) == "careful & slow"


def test_constrained_language_mode_is_detected_first() -> None:
    bootstrap = agent_script("bootstrap.ps1")
    first_lines = bootstrap.splitlines()[:2]
    assert first_lines[0] == "$m = $ExecutionContext.SessionState.LanguageMode"
    assert "-ne 'FullLanguage'" in first_lines[1] and "Write-Error" in first_lines[1] and "exit 4" in first_lines[1]


# --- finding 6 and 12: the collector ---------------------------------------------------------------------------


def test_sql_server_name_is_read_by_a_json_or_xml_parser() -> None:
    text = code(body(agent_script(), "Get-SqlServerName"))
    assert "ConvertFrom-Json -InputObject $text" in text and "$document.LoadXml($text)" in text
    assert "$document.XmlResolver = $null" in text and "[regex]" not in text


def test_a_utf16_master_settings_file_is_decoded_by_its_byte_order_mark() -> None:
    """``Encoding.UTF8.GetString`` turns a UTF-16 BOM (FF FE) into two U+FFFD, which no Trim removes: the text
    then starts with neither ``{`` nor ``<``, ``LoadXml`` throws and SSISDB was reported unreachable for a
    master whose settings file is UTF-16 (PowerShell's ``>``), though scaleguard's own parser reads it."""
    text = code(body(agent_script(), "Get-SqlServerName"))
    assert "UTF8.GetString" not in text
    reader = next(line for line in text.splitlines() if "System.IO.StreamReader" in line)
    assert reader.rstrip().endswith("$true"), "detectEncodingFromByteOrderMarks must be on"
    assert "$text = $reader.ReadToEnd()" in text


def _well_known_readers(script: str) -> dict[str, str]:
    table = script[script.index("$WellKnownReaders = @{") : script.index("function Get-ReaderName")]
    return dict(re.findall(r"'(S-1-[0-9-]+)'\s*=\s*'([^']+)'", table))


def test_key_readers_are_read_as_sids_and_well_known_ones_named_in_english() -> None:
    """Windows names well-known accounts in the system locale (MS-LSAT 3.1.1.1.1: the predefined names
    "MUST be localized"), so on a German node ``Get-Acl``'s ``Access`` said ``Jeder`` and
    ``NT-AUTORITAET\\NETZWERKDIENST``, which scaleguard took for no broad group and for no NetworkService:
    a key every account can read was reported unreadable by the worker's account."""
    script = agent_script()
    text = code(body(script, "Get-KeyReaders"))
    assert "GetAccessRules($true, $true, [System.Security.Principal.SecurityIdentifier])" in text
    assert "$File).Access" not in text and "$who = Get-ReaderName $ace.IdentityReference" in text
    named = _well_known_readers(script)
    broad = {named[sid].lower() for sid in ("S-1-1-0", "S-1-5-11", "S-1-5-32-545", "S-1-5-80-0")}
    assert broad <= set(BROAD_READERS), broad - set(BROAD_READERS)
    for sid in ("S-1-5-18", "S-1-5-19", "S-1-5-20"):
        assert canonical(named[sid]) == sid.lower(), named[sid]
        assert account_matches(named[sid], sid)
    assert "BUILTIN\\Administrators" in named.values()
    reader = code(body(script, "Get-ReaderName"))
    assert "$WellKnownReaders.ContainsKey($value)" in reader and "[System.Security.Principal.NTAccount]" in reader
    assert "StartsWith('S-1-5-80-')" in reader and "'NT SERVICE\\'" in reader


def test_a_settings_file_that_will_not_open_is_reported_unreadable_not_absent() -> None:
    """``File.ReadAllBytes`` throws on a locked or denied file; that throw used to leave the agent's
    ``configs`` an empty list (the node then had "no settings file"). Each file is now read on its own, an
    unreadable one is kept with its reason, and a failure to look at all leaves ``configs`` null."""
    script = agent_script()
    files = code(body(script, "Get-ConfigFiles"))
    assert "try { $content = [Convert]::ToBase64String([System.IO.File]::ReadAllBytes($path)) }" in files
    assert "content_b64 = $content" in files and "read_error  = $readError" in files
    main = code(script[script.index("$document = [ordered]@{") :])
    assert "$configs = $null" in main and "$configs = New-List" not in main
    unreadable = next(line for line in code(body(script, "Get-SqlServerName")).splitlines() if "content_b64)" in line)
    assert "($null -eq $config.content_b64)" in unreadable and "throw " in unreadable, "an unread file is no '.'"



def test_a_schannel_value_that_is_not_a_dword_is_unknown_not_the_number_it_spells() -> None:
    """``Get-ItemProperty`` gives a REG_SZ "2" as the string "2", and ``[int]"2"`` is 2: a ClientAuthTrustMode
    typed as a string passed SO-M11 although SCHANNEL's values are REG_DWORD and what it makes of a string
    is not documented. Such a value now throws, which leaves the section null with the reason."""
    text = code(body(agent_script(), "Get-Schannel"))
    assert "Get-RegistryValue" not in text and "$key.GetValueKind($name)" in text
    assert "-ne [Microsoft.Win32.RegistryValueKind]::DWord" in text and "throw " in text
    assert "if ($names -notcontains $name) { continue }" in text


def test_an_unreadable_key_reason_is_recorded() -> None:
    script = agent_script()
    assert "private key not readable: $reason" in body(script, "Get-KeyFile")
    assert 'Add-AgentError "stores/$Store/$($cert.Thumbprint)" $_.Exception.Message' in body(
        script, "Get-StoreCertificates"
    )


# --- "also" items ----------------------------------------------------------------------------------------------


def test_master_marker_is_probed_as_a_subkey_or_a_value() -> None:
    text = code(body(agent_script(), "Test-MasterMarker"))
    assert (
        "GetSubKeyNames()) -contains 'SQL_IS_Master'" in text and "GetValueNames()) -contains 'SQL_IS_Master'" in text
    )
    assert "Test-Path -LiteralPath" not in text


def test_delete_key_spares_a_key_another_store_uses() -> None:
    script = actions_script()
    assert "Test-KeyUsedElsewhere $storeName $thumbprint" in body(script, "Invoke-RemoveCertificate")
    assert "($null -eq $keptFor)" in body(script, "Invoke-RemoveCertificate")


def test_a_key_is_deleted_only_when_it_opens_and_a_failure_after_the_removal_is_a_partial_change() -> None:
    """``Remove-Item -DeleteKey`` (PowerShell's CertificateProvider.DoRemove) deletes the certificate from the
    store before it deletes the key, and throws when the key cannot be deleted (a dangling key link: "Keyset
    does not exist"; no right to the key file): the certificate is then gone, which is no exit 1."""
    text = code(body(actions_script(), "Invoke-RemoveCertificate"))
    decided = next(line for line in text.splitlines() if line.lstrip().startswith("$keyDeleted ="))
    assert "(Test-KeyOpens $cert)" in decided and "$hadKey" in decided
    delete = text.index("-DeleteKey")
    attempt = text.rindex("try {", 0, delete)
    failed = text[delete:]
    assert text[attempt:delete].count("\n") == 0  # the -DeleteKey call is the try's own statement
    assert "Open-Store $storeName -ReadOnly" in failed and "Find-Certificate $now $thumbprint" in failed
    assert "if ($null -ne $left) { Stop-Action" in failed  # still there: nothing changed
    assert "$result.key_deleted = $false" in failed and "Stop-Partial" in failed and "$result" in failed


def test_revoked_says_whether_the_dacl_changed_not_what_remove_access_rule_returned() -> None:
    """``RemoveAccessRule`` returns ``CommonAcl.RemoveQualifiedAces``' "removal possible", true also when no
    entry of the account matched; an undo reading ``revoked: true`` would then grant a read never held."""
    text = code(body(actions_script(), "Invoke-RevokeKeyRead"))
    assert "[void]$acl.RemoveAccessRule($rule)" in text
    assert "= $acl.RemoveAccessRule" not in text
    assert text.count("$acl.GetSecurityDescriptorSddlForm($access)") == 2
    assert "$revoked = ($acl.GetSecurityDescriptorSddlForm($access) -cne $before)" in text
    assert "if ($revoked) { [System.IO.File]::SetAccessControl($target.file, $acl) }" in text


def test_a_round_that_reads_after_it_ends_with_the_actions_exit_code() -> None:
    """In a runspace of its own, ``exit`` reaches ``LocalPipeline`` as an ``ExitException`` that calls the
    host's ``SetShouldExit``, which the default host of ``[PowerShell]::Create()`` ignores, and ``HadErrors``
    stays false for a failure the agent caught itself: the round went on to read the node and exited 0, and
    its one document (the read) was taken for the batch's or the lease's answer."""
    from scaleguard.apply.transport import round_then_read_script

    entry = code(actions_script().split("# --- entry point", 1)[1].split("\n", 1)[1])
    exits = re.findall(r"^\s*exit (\d)$", entry, re.M)
    assert exits == ["2", "3", "1", "0"]
    for number in ("1", "2", "3"):
        assert re.search(rf"\$AgentExitCode = {number}\n\s*exit {number}\n", entry), number
    assert entry.lstrip().startswith("$AgentExitCode = 0\n")
    loop = code(round_then_read_script().split("foreach ($pair in", 1)[1])
    invoke, read = loop.index("$shell.Invoke()"), loop.index("$runspace.SessionStateProxy.GetVariable('AgentExitCode')")
    assert invoke < read < loop.index("exit $code") and "$shell.Runspace = $runspace" in loop[:invoke]


def test_an_abandoned_lease_lock_is_owned_not_a_failure() -> None:
    """``Mutex.WaitOne`` throws ``AbandonedMutexException`` when the previous owner exited holding the mutex,
    and the waiting thread then owns it: taken for a failure, the op exited 1 still holding the mutex, and a
    run waiting meanwhile got the same exception in turn. PowerShell's catch matches the exception inside
    the ``MethodInvocationException`` (``ExceptionHandlingOps.FindMatchingHandler`` tries it first)."""
    text = code(body(actions_script(), "Open-LeaseLock"))
    assert "try { $owned = $mutex.WaitOne(15000) }" in text
    assert "catch [System.Threading.AbandonedMutexException] { $owned = $true }" in text
    assert "if (-not $owned) { $mutex.Dispose(); Stop-Action" in text
    assert "if (-not $mutex.WaitOne(" not in text


def test_a_schannel_value_is_reported_put_back_only_when_it_reads_back_as_it_was() -> None:
    """The put-back of a deleted value runs under -ErrorAction SilentlyContinue, so its failure raised
    nothing and the agent still said "the previous value was put back" (exit 1, nothing changed)."""
    text = code(body(actions_script(), "Invoke-SetSchannelValue"))
    failed = text[text.index("if ((Get-SchannelValue $name) -ne $value) {") :]
    put_back = failed.index("Remove-ItemProperty")
    read_back = failed.index("$back = Get-SchannelValue $name")
    claim = failed.index("(the previous value was put back)")
    assert put_back < read_back < failed.index("if ($back -ne $previous) { Stop-Partial") < claim
    assert failed.count("Stop-Partial") == 2 and "$result" in failed


def test_every_field_an_undo_reads_is_written_by_the_agent_as_a_boolean_or_previous() -> None:
    """``answer_problems`` refuses an answer without these, so the agent must write every one of them (a
    boolean from a comparison, a ``[bool]`` cast, ``$true``/``$false`` or ``Add-ToStore``'s return)."""
    from scaleguard.apply.inverse import _SAYS_WHAT_WAS, ANSWER_FLAGS

    script = actions_script()
    dispatch = dict(re.findall(r"'(\w+)' \{ \$result = (Invoke-[\w-]+) \$Request \}", script))
    for op, flags in {**ANSWER_FLAGS, **dict.fromkeys(_SAYS_WHAT_WAS, ("previous",))}.items():
        text = code(body(script, dispatch[op]))
        for flag in flags + (("had_key", "key_deleted") if op == "remove_certificate" else ()):
            assigned = re.findall(rf"(?:^|[\s;{{.]){flag} = (\S+?)[;}}\s]", text, re.M)
            assert assigned, (op, flag)
            if flag != "previous":
                assert all(v in ("$true", "$false", "$already", "$wasRunning", "$hadKey", "$keyDeleted")
                           or v.startswith(("[bool]", "(")) for v in assigned), (op, flag, assigned)


def test_temporary_file_is_removed_when_replace_fails() -> None:
    text = code(body(actions_script(), "Write-BytesAtomically"))
    assert "try { [System.IO.File]::Replace($temporary, $Path, [NullString]::Value) }" in text
    assert "[System.IO.File]::Delete($temporary)" in text


def test_a_replace_that_took_the_file_away_moves_the_new_copy_in_instead_of_deleting_it() -> None:
    """ReplaceFile without a backup name: on ERROR_UNABLE_TO_MOVE_REPLACEMENT "the replaced file no longer
    exists and the replacement file exists under its original name" (and on _2 the replaced file has another
    name): deleting the temporary copy then left the node without its settings file, reported as exit 1."""
    text = code(body(actions_script(), "Write-BytesAtomically"))
    failed = text[text.index("catch {") :]
    exists = failed.index("[System.IO.File]::Exists($Path)")
    delete = failed.index("[System.IO.File]::Delete($temporary)")
    assert exists < delete  # the temporary copy is removed only while the file is still there
    assert "try { [System.IO.File]::Move($temporary, $Path) }" in failed
    move = failed.index("[System.IO.File]::Move($temporary, $Path)")
    assert "Stop-Partial" in failed[move:] and "Stop-Action" in failed[exists:move]


def test_deny_entries_win_over_allow_entries() -> None:
    text = code(body(actions_script(), "Get-ReadState"))
    assert "if ($ace.AccessControlType -eq 'Deny') { return 'denied' }" in text
    assert "(Get-ReadState $Acl $Sid) -eq 'allowed'" in body(actions_script(), "Test-CanRead")


# --- the executor rolls back a partial change with what the agent reported ---------------------------------


class PartialTransport:
    """Every start_service is a partial change (alone: exit code 3; in a batch: its entry says so);
    everything else succeeds. Records every action, batched or not."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def client(self, cluster: str, node: str) -> Any:
        sent = self.sent

        def one(payload: dict[str, Any]) -> dict[str, Any]:
            sent.append(payload)
            if payload["op"] == "start_service":
                raise PartialChange("W1: partial change: did not reach Running", {"name": "S", "was_running": False})
            return {"name": "S", "previous": "Manual", "mode": "Automatic"}

        class Client:
            def request(self, payload: dict[str, Any]) -> dict[str, Any]:
                if payload["op"] != "batch":
                    return one(payload)
                results: list[dict[str, Any]] = []
                for action in payload["actions"]:
                    try:
                        results.append({"ok": True, "result": one(action)})
                    except PartialChange as exc:
                        results.append({"ok": False, "error": str(exc), "partial": True, "result": exc.result})
                        break
                return {"results": results}

        return Client()

    def close(self) -> None:
        pass


WORKER = "SSISScaleOutWorker150"


def plan_of(*steps: Step) -> Plan:
    unit = Unit(id="u01", remediation="manual", cluster="C", target="W1", summary="-", steps=[s.id for s in steps])
    now = datetime.now(UTC)
    return Plan(generated_at=now, expires_at=now + timedelta(days=1), units=[unit], steps=list(steps))


def service_step(step_id: str, action: str, **extra: Any) -> Step:
    return Step(
        id=step_id, unit="u01", cluster="C", node="W1", action=action,
        params={"role": "worker", "name": WORKER, **extra},
    )  # fmt: skip


def live_worker() -> Any:
    """The collected node the executor resolves the service name against (it runs against live state)."""
    from fixcases import NOW

    from scaleguard.snapshot.model import ClusterSnapshot, HostIdentity, NodeSnapshot, Service, Snapshot

    node = NodeSnapshot(
        name="W1", identity=HostIdentity(computer_name="W1"), services=[Service(name=WORKER, state="Stopped")]
    )
    return Snapshot(clusters=[ClusterSnapshot(cluster="C", collected_at=NOW, source="t", mode="live", nodes=[node])])


def test_a_partial_change_is_unknown_and_rolled_back_exactly(tmp_path: Path) -> None:
    plan = plan_of(
        service_step("s001", "set_service_start_mode", mode="Automatic"), service_step("s002", "start_service")
    )
    transport = PartialTransport()
    with Journal(tmp_path / "j.sqlite") as journal:
        report = Executor(plan, transport, journal, current=live_worker()).run()
    assert report.steps["s002"].status == "unknown" and "did not reach Running" in report.steps["s002"].detail
    assert [r["op"] for r in transport.sent] == [
        "set_service_start_mode",
        "start_service",
        "stop_service",
        "set_service_start_mode",
    ]
    assert transport.sent[-1] == {"op": "set_service_start_mode", "name": WORKER, "mode": "Manual"}
    assert report.units["u01"] == "failed"


def test_a_partial_change_sent_alone_is_rolled_back_the_same_way(tmp_path: Path) -> None:
    transport = PartialTransport()
    with Journal(tmp_path / "j.sqlite") as journal:
        report = Executor(
            plan_of(service_step("s001", "start_service")), transport, journal, current=live_worker()
        ).run()
        entries = journal.entries(report.run_id)
    assert report.steps["s001"].status == "unknown"
    assert [r["op"] for r in transport.sent] == ["start_service", "stop_service"]
    assert entries[0].status == "unknown"


def test_secret_refs_reach_the_payload_secret_not_the_json(tmp_path: Path) -> None:
    pfx = tmp_path / "m.pfx"
    pfx.write_bytes(b"not really a pfx")
    step = Step(
        id="s001", unit="u01", cluster="C", node="M1", action="import_pfx",
        params={"store": "Root", "thumbprint": "A" * 40, "pfx": {"local_file": str(pfx)},
                "password": {"secret_env": "SG_CONTRACT_PFX"}},
    )  # fmt: skip
    answer = json.dumps({"store": "Root", "thumbprint": "A" * 40, "der_b64": "AAAA", "already_present": False})
    channel = Answering(CommandResult(answer.encode(), b"", 0))

    class OneClient:
        def client(self, cluster: str, node: str) -> AgentClient:
            return AgentClient(channel, timeout_s=30, name=node)  # type: ignore[arg-type]

        def close(self) -> None:
            pass

    with Journal(tmp_path / "j.sqlite") as journal:
        report = Executor(plan_of(step), OneClient(), journal, secrets=lambda ref: "Pfx-Secret-1").run()
        logged = journal.entries(report.run_id)[0].request
    [stdin] = channel.sent
    assert b"Pfx-Secret-1" not in stdin and payload_secret(stdin) == "Pfx-Secret-1"
    assert "password" not in split_payload(stdin)[1]
    assert logged["password"] == {"secret": "SG_CONTRACT_PFX"}


def test_set_config_setting_finds_the_file_itself_and_edits_with_indexof() -> None:
    script = actions_script()
    span = code(body(script, "Get-SettingSpan"))
    assert span.count(".IndexOf(") >= 4 and "-match" not in span and "-replace" not in span and "Regex" not in span
    edit = code(body(script, "Invoke-SetConfigSetting"))
    assert "Find-ConfigFile" in edit and "Get-Field $Request 'path'" not in edit
    assert "Initialize-BackupFolder" in edit and "Write-BytesAtomically" in edit
    assert "$ThumbprintPattern" in edit and "$EndpointPattern" in edit
    assert "Get-BinnFolders" in code(body(script, "Find-ConfigFile"))
    assert "UTF8Encoding -ArgumentList $false, $true" in code(body(script, "Read-ConfigText"))  # throws on bad bytes
    # a backup left by a run stopped before the write is kept only when it holds the bytes there now
    keep = next(line for line in edit.splitlines() if "already exists" in line)
    assert keep.lstrip().startswith("elseif") and "Get-Sha256 ([System.IO.File]::ReadAllBytes($backup))" in keep
    assert "-ne $before" in keep
