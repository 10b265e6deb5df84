$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
$payload = @($input) -join "`n"
$parts = $payload.Split([string[]]@("`0`0`0`0"), 2, [System.StringSplitOptions]::None)
if ($parts.Length -ne 2) { [Console]::Error.WriteLine('scaleguard: malformed stdin payload'); exit 2 }
& ([ScriptBlock]::Create($parts[0])) $parts[1]
exit $LASTEXITCODE
