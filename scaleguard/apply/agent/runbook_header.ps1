#Requires -Version 5.1
# scaleguard change-window runbook: the fix steps of ONE node, written by `scaleguard fix --emit-runbook`.
#
# Run it elevated on the node it names, e.g.
#   powershell.exe -NoProfile -ExecutionPolicy Bypass -File WORKER03.ps1 > WORKER03.result.json
# With -CheckOnly it changes nothing: it reports what each step would do (done, pending, stale), e.g. the
# day before the change window; such a result is not imported.
# and give the result file back to `scaleguard fix --import-results` (see README.txt next to it).
#
# Everything specific to this node is the base64 data line below: JSON holding the node's steps, each with
# the state the plan expects before it and the state it sets. The code after that line is scaleguard's fix
# agent (the very lines of actions.ps1) and a driver that, step by step, looks at the node: a step whose
# target already holds is done and skipped, one whose "before" still holds is applied, anything else is
# stale and stops the node's remaining steps. It prints one JSON document (ASCII) with every step's outcome
# and exits 0 when every step is done or applied, 1 when one is stale or failed, 2 when it could not start,
# 4 when PowerShell does not run in FullLanguage mode (AppLocker/WDAC).
# No value from the plan is PowerShell code here: the data line is only ever decoded as JSON.
#Requires -RunAsAdministrator
param([switch]$CheckOnly, [Parameter(ValueFromRemainingArguments = $true)][object[]]$RunbookIgnored)
$RunbookLanguage = $ExecutionContext.SessionState.LanguageMode
if ($RunbookLanguage -ne 'FullLanguage') { Write-Error "scaleguard: PowerShell runs in $RunbookLanguage (AppLocker/WDAC); the runbook needs FullLanguage"; exit 4 }
$ScaleguardSecret = $null
