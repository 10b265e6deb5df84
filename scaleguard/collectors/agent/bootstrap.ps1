$m = $ExecutionContext.SessionState.LanguageMode
if ($m -ne 'FullLanguage') { Write-Error "scaleguard: PowerShell runs in $m (AppLocker/WDAC); the agent needs FullLanguage"; exit 4 }
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
$WarningPreference = 'SilentlyContinue'
$p = (@($input) -join "`n").Split([string[]]@("`0`0`0`0"), 3, [StringSplitOptions]::None)
if ($p.Length -lt 2) { [Console]::Error.WriteLine('scaleguard: malformed stdin payload'); exit 2 }
$ScaleguardSecret = $null
if ($p.Length -eq 3) { $ScaleguardSecret = $p[2].Trim() }
& ([ScriptBlock]::Create($p[0])) $p[1]
exit $LASTEXITCODE
