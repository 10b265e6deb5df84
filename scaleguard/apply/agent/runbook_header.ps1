#Requires -Version 5.1
# scaleguard change-window runbook: the fix steps of ONE node, written by `scaleguard fix --emit-runbook`.
#
# Run it elevated on the node it names, e.g.
#   powershell.exe -NoProfile -ExecutionPolicy Bypass -File WORKER03.ps1 > WORKER03.result.json
# and give the result file back to `scaleguard fix --import-results` (see README.txt next to it).
# With -CheckOnly it changes nothing: it reports what each step would do (done, pending, stale), e.g. the
# day before the change window; such a result is not imported.
#
# Everything specific to this node is the base64 data line below: JSON holding the node's steps, each with
# the state the plan expects before it and the state it sets. The code after that line is scaleguard's fix
# agent (the very lines of actions.ps1) and a driver that, step by step, looks at the node: a step whose
# target already holds is done and skipped, one whose "before" still holds is applied, anything else is
# stale and stops the node's remaining steps. It prints one JSON document (ASCII) with every step's outcome
# and exits 0 when every step is done or applied, 1 when one is stale or failed, 2 when it could not start
# (another computer, not elevated, a 32-bit PowerShell), 4 when PowerShell does not run in FullLanguage
# mode (AppLocker/WDAC).
# No value from the plan is PowerShell code here: the data line is only ever decoded as JSON.
# Elevation is checked in code, not by a RunAsAdministrator requirement: powershell.exe -File ends a script
# it refuses that way with its own exit code (1 for a script error), which a caller would take for "a step
# stale or failed"; this says exit 2, as for any other node that cannot start.
param([switch]$CheckOnly, [Parameter(ValueFromRemainingArguments = $true)][object[]]$RunbookIgnored)
$RunbookLanguage = $ExecutionContext.SessionState.LanguageMode
if ($RunbookLanguage -ne 'FullLanguage') { Write-Error "scaleguard: PowerShell runs in $RunbookLanguage (AppLocker/WDAC); the runbook needs FullLanguage"; exit 4 }
$RunbookPrincipal = New-Object System.Security.Principal.WindowsPrincipal ([System.Security.Principal.WindowsIdentity]::GetCurrent())
if (-not $RunbookPrincipal.IsInRole([System.Security.Principal.WindowsBuiltInRole]::Administrator)) {
    [Console]::Error.WriteLine('scaleguard runbook: not elevated; run it as an administrator (Run as administrator, SYSTEM, or WinRM)'); exit 2
}
if ([Environment]::Is64BitOperatingSystem -and -not [Environment]::Is64BitProcess) {
    # A 32-bit powershell.exe (SCCM package programs) sees HKLM\SOFTWARE through WOW6432Node and
    # %ProgramFiles% as Program Files (x86): SQL Server's setup keys and settings files would not be found.
    [Console]::Error.WriteLine('scaleguard runbook: 32-bit PowerShell; run %windir%\sysnative\WindowsPowerShell\v1.0\powershell.exe'); exit 2
}
$ScaleguardSecret = $null
