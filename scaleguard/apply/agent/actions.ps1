# scaleguard fix agent: the Windows side of every fix action. Windows PowerShell 5.1 compatible.
#
# Delivered like the collector (collect.ps1): over stdin behind the -EncodedCommand bootstrap, which passes
# the request JSON as the only argument. Every value in the request (thumbprints, host names, accounts,
# paths) is DATA: it is parsed with ConvertFrom-Json, validated against a strict pattern, and only ever
# passed as a parameter value or a process argument - never spliced into PowerShell source. The script is
# byte-identical for every request.
#
# One request = one action, or a "batch" of consecutive actions of this node run in order and stopped at
# the first failure (each answer, or the error that stopped it, is reported). An action either completes
# or leaves the node as it was, and reports what was there before, so scaleguard can roll back and undo.
# The lease_* ops keep the cluster lease of a fix run (on masters) in an administrators-only registry key.
# Prints ONE JSON document (ASCII only) on stdout and exits 0; on failure prints the reason on stderr and
# exits 1 (2 for an unknown op). When an action changed something and could neither finish nor undo it,
# it exits 3: stdout then carries what it had found before (so the caller can roll back) and stderr the
# reason; inside a batch, that action's entry says partial = true and carries the same. A secret (the PFX
# password) never travels in the JSON: the bootstrap hands it over in $ScaleguardSecret, so no cmdlet or
# function ever receives it as a parameter and Module Logging (event 4103) cannot record it.
# Needs Windows Server 2016 or later (New-SelfSignedCertificate -KeyLength/-TextExtension).
# Everything between the param line and the entry point below is also the body of a change-window runbook
# (scaleguard fix --emit-runbook): the runbook carries these very lines, so keep them free of the request.
param([string]$RequestJson)

$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
$WarningPreference = 'SilentlyContinue'  # a warning would reach stderr as CLIXML ahead of the agent's reason
Set-StrictMode -Version 2.0
$Partial = $false
$PartialResult = $null

$HostNamePattern = '^(?!-)[A-Za-z0-9_-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9_-]{1,63}(?<!-))*$'
$ThumbprintPattern = '^[0-9A-F]{40}$'
$AppIdPattern = '^\{[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}\}$'
$IpPortPattern = '^((\d{1,3}\.){3}\d{1,3}|\[[0-9A-Fa-f:.]+\]):\d{1,5}$'
$ServicePattern = '^SSISScaleOut(Master|Worker)\d{2,3}$'
$BackupNamePattern = '^[A-Za-z0-9._-]{1,80}\\[A-Za-z0-9._-]{1,120}$'
$AccountPattern = '^[^\x00-\x1f"/\[\]:;|=,+*?<>@]{1,104}$'
$SchannelNamePattern = '^(ClientAuthTrustMode|SendTrustedIssuerList)$'
$EndpointPattern = '^https://[A-Za-z0-9.-]{1,253}:[0-9]{1,5}/?$'
$RoleSettings = @{
    'master' = @('SSLCertThumbprint')
    'worker' = @('MasterHttpsCertThumbprint', 'WorkerHttpsCertThumbprint', 'MasterEndpoint')
}
$StoreNames = @('Root', 'My')
$BindingRegistry = 'HKLM:\SYSTEM\CurrentControlSet\Services\HTTP\Parameters\SslBindingInfo'
$SchannelRegistry = 'HKLM:\SYSTEM\CurrentControlSet\Control\SecurityProviders\SCHANNEL'
$ScaleguardRegistry = 'HKLM:\SOFTWARE\scaleguard'
$LeaseRegistry = 'HKLM:\SOFTWARE\scaleguard\Lease'
$RunIdPattern = '^[0-9]{8}T[0-9]{6}-[0-9a-f]{4,32}$'
$LeaseTextPattern = '^[A-Za-z0-9 ._@\\-]{1,128}$'
$BatchMax = 64
$X509 = 'System.Security.Cryptography.X509Certificates'
$SqlVersions = @('140', '150', '160')
$ConfigNames = @('MasterSettings.config', 'WorkerSettings.config')
$TrustedOwners = @('S-1-5-18', 'S-1-5-32-544')
$WellKnownAccounts = @{
    'localsystem' = 'S-1-5-18'; 'nt authority\system' = 'S-1-5-18'; 'system' = 'S-1-5-18'
    'localservice' = 'S-1-5-19'; 'nt authority\localservice' = 'S-1-5-19'; 'nt authority\local service' = 'S-1-5-19'
    'networkservice' = 'S-1-5-20'; 'nt authority\networkservice' = 'S-1-5-20'; 'nt authority\network service' = 'S-1-5-20'
    'local service' = 'S-1-5-19'; 'network service' = 'S-1-5-20'
}

function Stop-Action([string]$Message) {
    throw (New-Object System.InvalidOperationException $Message)
}

function Stop-Partial([string]$Message, $Result) {
    # Something was changed and could not be undone here: the caller must treat the outcome as unknown.
    $script:Partial = $true
    $script:PartialResult = $Result
    throw (New-Object System.InvalidOperationException "partial change: $Message")
}

function Get-Field($Request, [string]$Name, [switch]$Optional) {
    $property = $Request.PSObject.Properties[$Name]
    $missing = ($null -eq $property) -or ($null -eq $property.Value) -or
        (($property.Value -is [string]) -and ($property.Value.Length -eq 0))
    if ($missing) {
        if ($Optional) { return $null }
        Stop-Action "the request needs '$Name'"
    }
    return $property.Value
}

function Get-Text($Request, [string]$Name, [string]$Pattern) {
    $value = [string](Get-Field $Request $Name)
    if ($Pattern -and ($value -cnotmatch $Pattern)) { Stop-Action "'$Name' is not acceptable" }
    return $value
}

function ConvertTo-AsciiJson($Value) {
    $json = ConvertTo-Json -InputObject $Value -Depth 10 -Compress
    return [regex]::Replace($json, '[^\x00-\x7F]', { param($m) '\u{0:x4}' -f [int][char]$m.Value })
}

function Get-Sha256([byte[]]$Bytes) {
    $sha = [System.Security.Cryptography.SHA256]::Create()
    try { return (($sha.ComputeHash($Bytes) | ForEach-Object { $_.ToString('x2') }) -join '') }
    finally { $sha.Dispose() }
}

function Get-Thumbprint($Request, [string]$Name = 'thumbprint') {
    $raw = [string](Get-Field $Request $Name)
    $clean = ($raw -replace '[^0-9A-Fa-f]', '').ToUpperInvariant()
    if ($clean -cnotmatch $ThumbprintPattern) { Stop-Action "'$Name' is not a 40-hex thumbprint" }
    return $clean
}

function Get-StoreName($Request, [string]$Name = 'store') {
    $store = [string](Get-Field $Request $Name)
    foreach ($known in $StoreNames) { if ($known -ieq $store) { return $known } }
    Stop-Action "'$Name' must be Root or My"
}

function Test-HostName([string]$Name) {
    $address = $null
    if ([System.Net.IPAddress]::TryParse($Name, [ref]$address)) { return $true }
    return (($Name.Length -le 253) -and ($Name -cmatch $HostNamePattern))
}

# --- paths: only the Scale Out settings files and scaleguard's own backup folder are ever touched -----

function Get-BinnFolders {
    # The DTS\Binn folders this node's own SQL Server setup says it has (as collect.ps1 finds them), local only.
    $folders = @()
    foreach ($version in $SqlVersions) {
        $binn = Join-Path $env:ProgramFiles "Microsoft SQL Server\$version\DTS\Binn"
        $setup = Get-ItemProperty -LiteralPath "HKLM:\SOFTWARE\Microsoft\Microsoft SQL Server\$version\DTS\Setup" -Name 'SQLPath' -ErrorAction SilentlyContinue
        if (($null -ne $setup) -and ([string]$setup.SQLPath -match '^[A-Za-z]:\\')) { $binn = Join-Path ([string]$setup.SQLPath) 'Binn' }
        $folders += [System.IO.Path]::GetFullPath($binn)
    }
    return $folders
}

function Get-ConfigPath($Request) {
    # A drive-absolute path only (no UNC, no \\?\ or \\.\ device path, no relative path), resolved, and equal
    # to MasterSettings.config or WorkerSettings.config in one of the Binn folders found above.
    $raw = [string](Get-Field $Request 'path')
    if ($raw -notmatch '^[A-Za-z]:[\\/]') { Stop-Action 'the config path must be a local drive path (UNC and device paths are refused)' }
    $full = [System.IO.Path]::GetFullPath($raw)
    $allowed = $false
    foreach ($binn in Get-BinnFolders) {
        foreach ($leaf in $ConfigNames) {
            if ($full -ieq (Join-Path $binn $leaf)) { $allowed = $true }
        }
    }
    if (-not $allowed) {
        Stop-Action 'only MasterSettings.config and WorkerSettings.config in this node''s SQL Server DTS\Binn folder are edited'
    }
    if (-not (Test-Path -LiteralPath $full -PathType Leaf)) { Stop-Action "$full does not exist" }
    return $full
}

function Test-TrustedFolder([string]$Path) {
    # A folder scaleguard keeps backups in: not a junction, owned by SYSTEM or Administrators.
    $attributes = [System.IO.File]::GetAttributes($Path)
    if (($attributes -band [System.IO.FileAttributes]::ReparsePoint) -ne 0) { Stop-Action "$Path is a junction or link; backups refused" }
    $acl = [System.IO.Directory]::GetAccessControl($Path, [System.Security.AccessControl.AccessControlSections]'Owner, Access')
    $owner = [string]$acl.GetOwner([System.Security.Principal.SecurityIdentifier]).Value
    if ($TrustedOwners -notcontains $owner) { Stop-Action "$Path is owned by $owner, not SYSTEM or Administrators; backups refused" }
}

function New-ProtectedFolder([string]$Path) {
    # Created with a protected DACL (SYSTEM and Administrators only), or an existing one checked.
    if ([System.IO.Directory]::Exists($Path)) { Test-TrustedFolder $Path; return }
    $security = New-Object System.Security.AccessControl.DirectorySecurity
    $security.SetAccessRuleProtection($true, $false)
    $inherit = [System.Security.AccessControl.InheritanceFlags]'ContainerInherit, ObjectInherit'
    $none = [System.Security.AccessControl.PropagationFlags]::None
    foreach ($sid in $TrustedOwners) {
        $identity = New-Object System.Security.Principal.SecurityIdentifier $sid
        $rule = New-Object System.Security.AccessControl.FileSystemAccessRule -ArgumentList $identity, 'FullControl', $inherit, $none, 'Allow'
        $security.AddAccessRule($rule)
    }
    [void][System.IO.Directory]::CreateDirectory($Path, $security)
    Test-TrustedFolder $Path
}

function Get-BackupRoot {
    $parent = Join-Path ([Environment]::GetFolderPath('CommonApplicationData')) 'scaleguard'
    return (Join-Path $parent 'backup')
}

function Get-BackupPath($Request) {
    $name = Get-Text $Request 'backup_name' $BackupNamePattern
    return (Join-Path (Get-BackupRoot) $name)
}

function Initialize-BackupFolder([string]$Backup) {
    $root = Get-BackupRoot
    New-ProtectedFolder ([System.IO.Path]::GetDirectoryName($root))
    New-ProtectedFolder $root
    New-ProtectedFolder ([System.IO.Path]::GetDirectoryName($Backup))
}

function Read-Backup($Request, [string]$Backup) {
    # The backup's bytes, only when its folder is trusted and they still have the SHA-256 recorded when made.
    $recorded = Get-Text $Request 'backup_sha256' '^[0-9a-f]{64}$'
    Test-TrustedFolder (Get-BackupRoot)
    Test-TrustedFolder ([System.IO.Path]::GetDirectoryName($Backup))
    $bytes = [System.IO.File]::ReadAllBytes($Backup)
    if ((Get-Sha256 $bytes) -ne $recorded) { Stop-Action "the backup $Backup does not have the SHA-256 recorded when it was made; not restored" }
    return , $bytes
}

function Write-BytesAtomically([string]$Path, [byte[]]$Bytes) {
    # ReplaceFile keeps the destination's ACL and attributes; a crash leaves either the old or the new file.
    # When Replace fails (a locked file) the temporary copy is removed and the file is as it was. Without a
    # backup name, a Replace that could not rename the new copy into place (ERROR_UNABLE_TO_MOVE_REPLACEMENT
    # and _2) has already taken the file away: the temporary copy is then the file's only content and is moved
    # into place, never deleted.
    $temporary = "$Path.scaleguard-new"
    [System.IO.File]::WriteAllBytes($temporary, $Bytes)
    try { [System.IO.File]::Replace($temporary, $Path, [NullString]::Value) }
    catch {
        $reason = $_.Exception.Message
        if ([System.IO.File]::Exists($Path)) {
            try { [System.IO.File]::Delete($temporary) } catch { $reason = "$reason (and $temporary could not be removed)" }
            Stop-Action "$Path not written: $reason"
        }
        try { [System.IO.File]::Move($temporary, $Path) }
        catch { Stop-Partial "$Path was taken away by a failed replace and its new content is left in $temporary: $reason" $null }
    }
    if ((Get-Sha256 ([System.IO.File]::ReadAllBytes($Path))) -ne (Get-Sha256 $Bytes)) {
        Stop-Partial "$Path could not be verified after writing" $null
    }
}

function Invoke-ReadFile($Request) {
    $path = Get-ConfigPath $Request
    $bytes = [System.IO.File]::ReadAllBytes($path)
    return [ordered]@{ path = $path; exists = $true; content_b64 = [Convert]::ToBase64String($bytes); sha256 = (Get-Sha256 $bytes) }
}

function Invoke-WriteConfig($Request) {
    $path = Get-ConfigPath $Request
    $backup = Get-BackupPath $Request
    $expected = Get-Text $Request 'expected_sha256' '^[0-9a-f]{64}$'
    $content = [Convert]::FromBase64String((Get-Text $Request 'content_b64' '^[A-Za-z0-9+/=]+$'))
    $current = [System.IO.File]::ReadAllBytes($path)
    if ((Get-Sha256 $current) -ne $expected) { Stop-Action "$path changed since it was read; not written" }
    Initialize-BackupFolder $backup
    if (Test-Path -LiteralPath $backup) { Stop-Action "the backup $backup already exists; not overwritten" }
    [System.IO.File]::WriteAllBytes($backup, $current)
    if ((Get-Sha256 ([System.IO.File]::ReadAllBytes($backup))) -ne $expected) { Stop-Action 'the backup could not be verified' }
    $result = [ordered]@{
        path = $path; backup_path = $backup; before_sha256 = $expected; backup_sha256 = $expected
        after_sha256 = (Get-Sha256 $content); changed = ($expected -ne (Get-Sha256 $content))
    }
    try { Write-BytesAtomically $path $content }
    catch { if ($script:Partial) { $script:PartialResult = $result }; throw }
    return $result
}

function Invoke-RestoreFile($Request) {
    $path = Get-ConfigPath $Request
    $backup = Get-BackupPath $Request
    if (-not (Test-Path -LiteralPath $backup -PathType Leaf)) {
        return [ordered]@{ path = $path; restored = $false; reason = 'no backup (the file was never written)' }
    }
    $saved = Read-Backup $Request $backup
    $expected = Get-Field $Request 'expected_sha256' -Optional
    $current = Get-Sha256 ([System.IO.File]::ReadAllBytes($path))
    if ($expected -and ($current -ne [string]$expected) -and ($current -ne (Get-Sha256 $saved))) {
        Stop-Action "$path was changed by someone else since scaleguard wrote it; not restored"
    }
    Write-BytesAtomically $path $saved
    return [ordered]@{ path = $path; restored = $true; sha256 = (Get-Sha256 $saved) }
}

# --- one setting edited on the node (runbooks: scaleguard cannot read the file first) ------------------

function Find-ConfigFile([string]$Role) {
    # The one settings file of that role in this node's DTS\Binn folders (the folders Get-ConfigPath allows).
    $leaf = 'WorkerSettings.config'
    if ($Role -eq 'master') { $leaf = 'MasterSettings.config' }
    $found = @()
    foreach ($binn in Get-BinnFolders) {
        $candidate = Join-Path $binn $leaf
        if (Test-Path -LiteralPath $candidate -PathType Leaf) { $found += $candidate }
    }
    if ($found.Count -ne 1) { Stop-Action "this node has $($found.Count) $leaf files in its SQL Server DTS\Binn folders; exactly one is edited" }
    return $found[0]
}

function Read-ConfigText([byte[]]$Bytes) {
    # UTF-8 or UTF-16 as its byte order mark says, else UTF-8 that must decode without a single bad byte.
    $bom = 0
    if (($Bytes.Length -ge 3) -and ($Bytes[0] -eq 0xEF) -and ($Bytes[1] -eq 0xBB) -and ($Bytes[2] -eq 0xBF)) {
        $encoding = New-Object System.Text.UTF8Encoding -ArgumentList $false, $true
        $bom = 3
    } elseif (($Bytes.Length -ge 2) -and ($Bytes[0] -eq 0xFF) -and ($Bytes[1] -eq 0xFE)) {
        $encoding = New-Object System.Text.UnicodeEncoding -ArgumentList $false, $false, $true
        $bom = 2
    } elseif (($Bytes.Length -ge 2) -and ($Bytes[0] -eq 0xFE) -and ($Bytes[1] -eq 0xFF)) {
        $encoding = New-Object System.Text.UnicodeEncoding -ArgumentList $true, $false, $true
        $bom = 2
    } else {
        $encoding = New-Object System.Text.UTF8Encoding -ArgumentList $false, $true
    }
    try { $text = $encoding.GetString($Bytes, $bom, $Bytes.Length - $bom) }
    catch { Stop-Action 'the settings file is not UTF-8 or UTF-16 text; not changed' }
    return @{ encoding = $encoding; bom = $bom; text = $text }
}

function Get-SettingSpan([string]$Text, [string]$Setting) {
    # <Setting>value</Setting> exactly once, its value plain text: found with IndexOf, never a pattern.
    $open = '<' + $Setting + '>'
    $close = '</' + $Setting + '>'
    $ordinal = [StringComparison]::Ordinal
    $start = $Text.IndexOf($open, $ordinal)
    if ($start -lt 0) { Stop-Action "the settings file has no $open element; not changed" }
    $from = $start + $open.Length
    $end = $Text.IndexOf($close, $from, $ordinal)
    if ($end -lt 0) { Stop-Action "the settings file has no $close after $open; not changed" }
    if (($Text.IndexOf($open, $from, $ordinal) -ge 0) -or ($Text.IndexOf($close, $end + $close.Length, $ordinal) -ge 0)) {
        Stop-Action "the settings file has $open more than once; not changed"
    }
    $value = $Text.Substring($from, $end - $from)
    if (($value.IndexOf('<') -ge 0) -or ($value.IndexOf('&') -ge 0)) { Stop-Action "the value of $open is not plain text; not changed" }
    return @{ start = $from; length = ($end - $from); value = $value }
}

function Get-SettingRequest($Request) {
    $role = Get-Text $Request 'role' '^(master|worker)$'
    $setting = [string](Get-Field $Request 'setting')
    if ($RoleSettings[$role] -cnotcontains $setting) { Stop-Action "'setting' is not a setting scaleguard edits in the $role settings file" }
    return @{ role = $role; setting = $setting }
}

function Get-ConfigSetting([string]$Role, [string]$Setting) {
    # The value as the file holds it now (what a runbook compares with the plan's before and target).
    $path = Find-ConfigFile $Role
    $decoded = Read-ConfigText ([System.IO.File]::ReadAllBytes($path))
    return (Get-SettingSpan $decoded.text $Setting).value
}

function Invoke-SetConfigSetting($Request) {
    # The value's characters replaced and nothing else: same encoding, same byte order mark, same line ends.
    $wanted = Get-SettingRequest $Request
    $setting = $wanted.setting
    if ($setting -eq 'MasterEndpoint') { $value = Get-Text $Request 'value' $EndpointPattern }
    else { $value = Get-Text $Request 'value' $ThumbprintPattern }
    $path = Find-ConfigFile $wanted.role
    $backup = Get-BackupPath $Request
    $current = [System.IO.File]::ReadAllBytes($path)
    $decoded = Read-ConfigText $current
    $span = Get-SettingSpan $decoded.text $setting
    $before = Get-Sha256 $current
    $result = [ordered]@{
        path = $path; setting = $setting; old_value = $span.value; before_sha256 = $before; after_sha256 = $before
        changed = $false; backup_path = $null; backup_sha256 = $null
    }
    if ($span.value -ceq $value) { return $result }
    $text = $decoded.text.Substring(0, $span.start) + $value + $decoded.text.Substring($span.start + $span.length)
    $body = $decoded.encoding.GetBytes($text)
    $content = New-Object byte[] ($decoded.bom + $body.Length)
    [Array]::Copy($current, 0, $content, 0, $decoded.bom)
    [Array]::Copy($body, 0, $content, $decoded.bom, $body.Length)
    Initialize-BackupFolder $backup
    # A runbook's backup name is fixed, so a run stopped before the write (a locked file) left this backup:
    # holding exactly the bytes there now, it is that file's backup and is kept, so the runbook can run again.
    if (-not (Test-Path -LiteralPath $backup)) { [System.IO.File]::WriteAllBytes($backup, $current) }
    elseif ((Get-Sha256 ([System.IO.File]::ReadAllBytes($backup))) -ne $before) { Stop-Action "the backup $backup already exists; not overwritten" }
    if ((Get-Sha256 ([System.IO.File]::ReadAllBytes($backup))) -ne $before) { Stop-Action 'the backup could not be verified' }
    $result.backup_path = $backup
    $result.backup_sha256 = $before
    $result.after_sha256 = Get-Sha256 $content
    $result.changed = $true
    try { Write-BytesAtomically $path $content }
    catch { if ($script:Partial) { $script:PartialResult = $result }; throw }
    return $result
}

# --- certificates ------------------------------------------------------------------------------------

function Open-Store([string]$Name, [switch]$ReadOnly) {
    $location = [System.Security.Cryptography.X509Certificates.StoreLocation]::LocalMachine
    $store = New-Object "$X509.X509Store" -ArgumentList $Name, $location
    if ($ReadOnly) { $store.Open([System.Security.Cryptography.X509Certificates.OpenFlags]::ReadOnly) }
    else { $store.Open([System.Security.Cryptography.X509Certificates.OpenFlags]::ReadWrite) }
    return $store
}

function Find-Certificate($Store, [string]$Thumbprint) {
    $findType = [System.Security.Cryptography.X509Certificates.X509FindType]::FindByThumbprint
    $found = $Store.Certificates.Find($findType, $Thumbprint, $false)
    if ($found.Count -eq 0) { return $null }
    return $found[0]
}

function Get-CertDocument($Cert, [string]$Store) {
    return [ordered]@{ store = $Store; thumbprint = $Cert.Thumbprint; der_b64 = [Convert]::ToBase64String($Cert.RawData) }
}

function Add-ToStore([string]$StoreName, $Cert) {
    # X509Store.Add copies the certificate's properties, the private-key link included.
    $store = Open-Store $StoreName
    try {
        $existing = Find-Certificate $store $Cert.Thumbprint
        if ($null -ne $existing) { return $true }
        $store.Add($Cert)
        return $false
    } finally { $store.Close() }
}

function Remove-CertificateAndKey([string]$StoreName, [string]$Thumbprint) {
    # Undo of a certificate this action itself created or imported (its key belongs to nothing else).
    Remove-Item -LiteralPath (Join-Path "Cert:\LocalMachine\$StoreName" $Thumbprint) -DeleteKey
}

function Invoke-CreateCertificate($Request) {
    $store = Get-StoreName $Request
    $names = @(Get-Field $Request 'common_names' | ForEach-Object { [string]$_ })
    $dns = @(Get-Field $Request 'san_dns' -Optional | Where-Object { $null -ne $_ } | ForEach-Object { [string]$_ })
    $ips = @(Get-Field $Request 'san_ip' -Optional | Where-Object { $null -ne $_ } | ForEach-Object { [string]$_ })
    foreach ($name in @($names + $dns + $ips)) {
        if (-not (Test-HostName $name)) { Stop-Action 'every certificate name must be a host name or an address' }
    }
    $bits = [int](Get-Field $Request 'key_bits')
    $hash = [string](Get-Field $Request 'hash')
    $days = [int](Get-Field $Request 'valid_days')
    if (($bits -lt 2048) -or ($hash -notin @('sha256', 'sha384', 'sha1')) -or ($days -lt 1)) {
        Stop-Action 'refusing a weak or invalid certificate request'
    }
    $friendly = Get-Text $Request 'friendly_name' '^[A-Za-z0-9 ._-]{1,64}$'
    $subject = ($names | ForEach-Object { 'CN=' + $_ }) -join ', '
    $san = @($dns | ForEach-Object { 'DNS=' + $_ }) + @($ips | ForEach-Object { 'IPAddress=' + $_ })
    $extensions = @('2.5.29.37={text}1.3.6.1.5.5.7.3.1,1.3.6.1.5.5.7.3.2')
    if ($san.Count -gt 0) { $extensions += ('2.5.29.17={text}' + ($san -join '&')) }
    $parameters = @{
        Subject           = $subject
        TextExtension     = $extensions
        CertStoreLocation = 'Cert:\LocalMachine\My'
        KeyAlgorithm      = 'RSA'
        KeyLength         = $bits
        HashAlgorithm     = $hash.ToUpperInvariant()
        KeyExportPolicy   = 'NonExportable'
        KeyUsage          = @('DigitalSignature', 'KeyEncipherment')
        NotBefore         = (Get-Date).AddDays(-1)
        NotAfter          = (Get-Date).AddDays($days)
        FriendlyName      = $friendly
    }
    $cert = New-SelfSignedCertificate @parameters
    if ($store -eq 'Root') {
        # MakeCert -ss Root: the certificate (with its key link) lives in Root only; the key stays on this node.
        $inRoot = $false
        try {
            [void](Add-ToStore 'Root' $cert)
            $inRoot = $true
            $my = Open-Store 'My'
            try { $my.Remove($cert) } finally { $my.Close() }
        } catch {
            $reason = $_.Exception.Message
            try {
                if ($inRoot) {
                    $root = Open-Store 'Root'
                    try { $root.Remove($cert) } finally { $root.Close() }
                }
                Remove-CertificateAndKey 'My' $cert.Thumbprint
            } catch {
                Stop-Partial "the new certificate $($cert.Thumbprint) could not be moved to Root nor removed: $reason" (Get-CertDocument $cert 'My')
            }
            Stop-Action "the new certificate could not be moved to Root (it was removed again): $reason"
        }
    }
    return (Get-CertDocument $cert $store)
}

function Invoke-ImportCertificate($Request) {
    $store = Get-StoreName $Request
    $der = [Convert]::FromBase64String((Get-Text $Request 'der_b64' '^[A-Za-z0-9+/=]+$'))
    $cert = New-Object "$X509.X509Certificate2" -ArgumentList (, $der)
    $wanted = Get-Thumbprint $Request
    if ($cert.Thumbprint -ne $wanted) { Stop-Action "the certificate is $($cert.Thumbprint), not the one requested" }
    $already = Add-ToStore $store $cert
    $document = Get-CertDocument $cert $store
    $document.already_present = $already
    return $document
}

function Invoke-ImportPfx($Request) {
    # The password is $ScaleguardSecret (set by the bootstrap, never in the JSON) and reaches only .NET
    # constructors, never a cmdlet or function parameter. The PFX is first opened without PersistKeySet, so
    # a refused file (wrong certificate, no key, an encryption this Windows cannot read) leaves no key behind.
    $store = Get-StoreName $Request
    $bytes = [Convert]::FromBase64String((Get-Text $Request 'pfx_b64' '^[A-Za-z0-9+/=]+$'))
    $wanted = Get-Thumbprint $Request
    $password = [NullString]::Value
    if ($null -ne $ScaleguardSecret) { $password = [System.Text.Encoding]::UTF8.GetString([Convert]::FromBase64String($ScaleguardSecret)) }
    $probe = [System.Security.Cryptography.X509Certificates.X509Certificate2]::new($bytes, $password, [System.Security.Cryptography.X509Certificates.X509KeyStorageFlags]::MachineKeySet)
    try {
        if (-not $probe.HasPrivateKey) { Stop-Action 'the PFX holds no private key' }
        if ($probe.Thumbprint -ne $wanted) { Stop-Action "the PFX certificate is $($probe.Thumbprint), not the one requested" }
    } finally { $probe.Reset() }
    $present = Open-Store $store -ReadOnly
    try { $existing = Find-Certificate $present $wanted } finally { $present.Close() }
    if ($null -ne $existing) {
        $document = Get-CertDocument $existing $store
        $document.already_present = $true
        return $document
    }
    $flags = [System.Security.Cryptography.X509Certificates.X509KeyStorageFlags]'MachineKeySet, PersistKeySet'
    $cert = [System.Security.Cryptography.X509Certificates.X509Certificate2]::new($bytes, $password, $flags)
    try { [void](Add-ToStore $store $cert) }
    catch {
        $reason = $_.Exception.Message
        try { Remove-PersistedKey $cert } catch { Stop-Partial "the PFX key was persisted but the certificate not added, and the key could not be removed: $reason" $null }
        Stop-Action "the PFX certificate could not be added (its key was removed again): $reason"
    }
    $document = Get-CertDocument $cert $store
    $document.already_present = $false
    return $document
}

function Remove-PersistedKey($Cert) {
    # A key persisted by PersistKeySet for a certificate that never reached a store.
    $key = [System.Security.Cryptography.X509Certificates.RSACertificateExtensions]::GetRSAPrivateKey($Cert)
    if ($key -is [System.Security.Cryptography.RSACryptoServiceProvider]) {
        $key.PersistKeyInCsp = $false
        $key.Clear()
    } elseif ($null -ne $key) {
        $key.Key.Delete()
    }
}

function Invoke-CopyCertificate($Request) {
    $source = Get-StoreName $Request 'from_store'
    $target = Get-StoreName $Request 'to_store'
    $thumbprint = Get-Thumbprint $Request
    $from = Open-Store $source -ReadOnly
    try { $cert = Find-Certificate $from $thumbprint } finally { $from.Close() }
    if ($null -eq $cert) { Stop-Action "the certificate is not in LocalMachine\$source" }
    $already = Add-ToStore $target $cert
    $document = Get-CertDocument $cert $target
    $document.already_present = $already
    return $document
}

function Test-KeyUsedElsewhere([string]$StoreName, [string]$Thumbprint) {
    # Store copies of one certificate share one key container: deleting it would break the other copy.
    foreach ($other in $StoreNames) {
        if ($other -eq $StoreName) { continue }
        $store = Open-Store $other -ReadOnly
        try { $copy = Find-Certificate $store $Thumbprint } finally { $store.Close() }
        if (($null -ne $copy) -and $copy.HasPrivateKey) { return $other }
    }
    return $null
}

function Invoke-RemoveCertificate($Request) {
    # The backup is Export('SerializedCert'): the certificate with its store properties, the private-key
    # link included, so restore_certificate puts back a certificate that finds its key without certutil.
    $storeName = Get-StoreName $Request
    $thumbprint = Get-Thumbprint $Request
    $deleteKey = [bool](Get-Field $Request 'delete_key' -Optional)
    $store = Open-Store $storeName
    try {
        $cert = Find-Certificate $store $thumbprint
        if ($null -eq $cert) { return [ordered]@{ store = $storeName; thumbprint = $thumbprint; removed = $false } }
        $hadKey = [bool]$cert.HasPrivateKey
        $keptFor = $null
        if ($deleteKey -and $hadKey) { $keptFor = Test-KeyUsedElsewhere $storeName $thumbprint }
        $backup = $null
        $backupSha = $null
        if ($null -ne (Get-Field $Request 'backup_name' -Optional)) {
            $backup = Get-BackupPath $Request
            Initialize-BackupFolder $backup
            if (Test-Path -LiteralPath $backup) { Stop-Action "the backup $backup already exists; not overwritten" }
            $serialized = $cert.Export([System.Security.Cryptography.X509Certificates.X509ContentType]::SerializedCert)
            [System.IO.File]::WriteAllBytes($backup, $serialized)
            $backupSha = Get-Sha256 $serialized
            if ((Get-Sha256 ([System.IO.File]::ReadAllBytes($backup))) -ne $backupSha) { Stop-Action 'the backup could not be verified' }
        }
        # HasPrivateKey is only the key link: a key that no longer opens is not deleted (-DeleteKey would fail).
        $keyDeleted = ($deleteKey -and $hadKey -and ($null -eq $keptFor) -and (Test-KeyOpens $cert))
        $result = [ordered]@{
            store = $storeName; thumbprint = $thumbprint; removed = $true; had_key = $hadKey
            key_deleted = $keyDeleted; key_kept_for = $keptFor; backup_path = $backup; backup_sha256 = $backupSha
        }
        if (-not $keyDeleted) {
            $store.Remove($cert)  # the key container stays (the backup's key link points at it)
            return $result
        }
        # -DeleteKey deletes the certificate first and the key after it: a key that cannot be deleted then
        # leaves the certificate gone, a partial change (a fresh store handle says which happened).
        try { Remove-Item -LiteralPath (Join-Path "Cert:\LocalMachine\$storeName" $thumbprint) -DeleteKey }
        catch {
            $reason = $_.Exception.Message
            $now = Open-Store $storeName -ReadOnly
            try { $left = Find-Certificate $now $thumbprint } finally { $now.Close() }
            if ($null -ne $left) { Stop-Action "the certificate was not removed: $reason" }
            $result.key_deleted = $false
            Stop-Partial "the certificate was removed but its private key could not be deleted: $reason" $result
        }
        return $result
    } finally { $store.Close() }
}

function Invoke-RestoreCertificate($Request) {
    $storeName = Get-StoreName $Request
    $thumbprint = Get-Thumbprint $Request
    $backup = Get-BackupPath $Request
    if (-not (Test-Path -LiteralPath $backup -PathType Leaf)) { Stop-Action "no certificate backup at $backup" }
    $bytes = Read-Backup $Request $backup
    $kind = [System.Security.Cryptography.X509Certificates.X509Certificate2]::GetCertContentType($bytes)
    if ($kind -ne [System.Security.Cryptography.X509Certificates.X509ContentType]::SerializedCert) {
        Stop-Action "the backup is $kind, not a serialized certificate"
    }
    $cert = New-Object "$X509.X509Certificate2" -ArgumentList (, $bytes)
    if ($cert.Thumbprint -ne $thumbprint) { Stop-Action 'the backup holds another certificate' }
    if ([bool](Get-Field $Request 'had_key' -Optional) -and (-not (Test-KeyOpens $cert))) {
        Stop-Action 'the private key the certificate was linked to no longer exists; not restored'
    }
    $already = Add-ToStore $storeName $cert
    $document = Get-CertDocument $cert $storeName
    $document.already_present = $already
    return $document
}

# --- private key access (what winhttpcertcfg -g does: an Allow Read ACE on the key file) --------------

function Get-KeyFile($Cert) {
    $key = $null
    try { $key = [System.Security.Cryptography.X509Certificates.RSACertificateExtensions]::GetRSAPrivateKey($Cert) } catch { $key = $null }
    if ($null -eq $key) { Stop-Action 'the private key cannot be opened' }
    $programData = $env:ProgramData
    if ($key -is [System.Security.Cryptography.RSACryptoServiceProvider]) {
        $name = $key.CspKeyContainerInfo.UniqueKeyContainerName
        return (Join-Path $programData "Microsoft\Crypto\RSA\MachineKeys\$name")
    }
    $name = $key.Key.UniqueName
    $capi = Join-Path $programData "Microsoft\Crypto\RSA\MachineKeys\$name"
    if (Test-Path -LiteralPath $capi) { return $capi }
    return (Join-Path $programData "Microsoft\Crypto\Keys\$name")
}

function Test-KeyOpens($Cert) {
    # HasPrivateKey only says a key link exists; this opens the key the link names.
    try { return ($null -ne [System.Security.Cryptography.X509Certificates.RSACertificateExtensions]::GetRSAPrivateKey($Cert)) }
    catch { return $false }
}

function Get-AccountSid([string]$Account) {
    # LocalSystem cannot be translated by NTAccount (it is the name the service manager shows), so the three
    # built-in service accounts map to their well-known SIDs; a SID string is taken as it is.
    $known = $WellKnownAccounts[$Account.ToLowerInvariant()]
    if ($null -eq $known -and $Account.StartsWith('.\')) { $known = $WellKnownAccounts[$Account.Substring(2).ToLowerInvariant()] }
    if ($null -ne $known) { return (New-Object System.Security.Principal.SecurityIdentifier $known) }
    if ($Account -match '^S-1-[0-9-]+$') { return (New-Object System.Security.Principal.SecurityIdentifier $Account) }
    return (New-Object System.Security.Principal.NTAccount $Account).Translate([System.Security.Principal.SecurityIdentifier])
}

function Get-KeyTarget($Request) {
    $storeName = Get-StoreName $Request
    $thumbprint = Get-Thumbprint $Request
    $account = Get-Text $Request 'account' $AccountPattern
    $sid = Get-AccountSid $account
    $store = Open-Store $storeName -ReadOnly
    try { $cert = Find-Certificate $store $thumbprint } finally { $store.Close() }
    if ($null -eq $cert) { Stop-Action "the certificate is not in LocalMachine\$storeName" }
    if (-not $cert.HasPrivateKey) { Stop-Action 'the certificate has no private key' }
    return [ordered]@{ account = $account; sid = $sid; file = (Get-KeyFile $cert) }
}

function Get-ReadState($Acl, $Sid) {
    # 'denied' when a Deny ACE for the account takes a read right away (Deny wins over any Allow),
    # 'allowed' when an Allow ACE grants one, else 'none'.
    $readMask = [int64]0x1 -bor [int64]0x80000000 -bor [int64]0x10000000
    $allowed = $false
    foreach ($ace in $Acl.GetAccessRules($true, $true, [System.Security.Principal.SecurityIdentifier])) {
        if ($ace.IdentityReference -ne $Sid) { continue }
        $rights = [int64]($ace.FileSystemRights.value__) -band [int64]0xFFFFFFFF
        if (($rights -band $readMask) -eq 0) { continue }
        if ($ace.AccessControlType -eq 'Deny') { return 'denied' }
        $allowed = $true
    }
    if ($allowed) { return 'allowed' }
    return 'none'
}

function Test-CanRead($Acl, $Sid) {
    return ((Get-ReadState $Acl $Sid) -eq 'allowed')
}

function Get-KeyAcl([string]$File) {
    # Only the DACL: Get-Acl/Set-Acl would also write back the owner and SACL, which fails ("The security
    # identifier is not allowed to be the owner of this object") when SQL setup or SYSTEM owns the key.
    return [System.IO.File]::GetAccessControl($File, [System.Security.AccessControl.AccessControlSections]::Access)
}

function Invoke-GrantKeyRead($Request) {
    $target = Get-KeyTarget $Request
    $acl = Get-KeyAcl $target.file
    $state = Get-ReadState $acl $target.sid
    if ($state -eq 'allowed') { return [ordered]@{ account = $target.account; already = $true } }
    if ($state -eq 'denied') { Stop-Action "a Deny entry for $($target.account) on the key file overrides any grant; not changed" }
    $rule = New-Object System.Security.AccessControl.FileSystemAccessRule -ArgumentList $target.sid, 'Read', 'Allow'
    $acl.AddAccessRule($rule)
    [System.IO.File]::SetAccessControl($target.file, $acl)
    return [ordered]@{ account = $target.account; already = $false }
}

function Invoke-RevokeKeyRead($Request) {
    # RemoveAccessRule returns true whenever the removal is possible, also when no entry of the account
    # matched, so whether anything was revoked is read from the DACL itself: changed or not.
    $target = Get-KeyTarget $Request
    $acl = Get-KeyAcl $target.file
    $access = [System.Security.AccessControl.AccessControlSections]::Access
    $before = $acl.GetSecurityDescriptorSddlForm($access)
    $rule = New-Object System.Security.AccessControl.FileSystemAccessRule -ArgumentList $target.sid, 'Read', 'Allow'
    [void]$acl.RemoveAccessRule($rule)
    $revoked = ($acl.GetSecurityDescriptorSddlForm($access) -cne $before)
    if ($revoked) { [System.IO.File]::SetAccessControl($target.file, $acl) }
    return [ordered]@{ account = $target.account; revoked = [bool]$revoked }
}

# --- HTTP.sys bindings (netsh http ... sslcert, arguments passed as data) ------------------------------

function Get-Binding([string]$IpPort) {
    if (-not (Test-Path -LiteralPath $BindingRegistry)) { return $null }
    foreach ($key in Get-ChildItem -LiteralPath $BindingRegistry) {
        if ($key.PSChildName -ine $IpPort) { continue }
        $values = Get-ItemProperty -LiteralPath $key.PSPath
        $appId = $null
        if ($values.PSObject.Properties['AppId'] -and ($null -ne $values.AppId)) {
            $appId = '{' + (New-Object System.Guid (, [byte[]]$values.AppId)).ToString() + '}'
        }
        $store = $null
        if ($values.PSObject.Properties['SslCertStoreName']) { $store = [string]$values.SslCertStoreName }
        $hash = $null
        if ($values.PSObject.Properties['SslCertHash']) {
            $hash = ((([byte[]]$values.SslCertHash) | ForEach-Object { $_.ToString('X2') }) -join '')
        }
        return [ordered]@{ ip_port = $key.PSChildName; cert_hash = $hash; app_id = $appId; cert_store = $store }
    }
    return $null
}

function Invoke-Netsh([string[]]$Arguments) {
    # netsh reports on stdout and by its exit code. Its stderr is merged under 'Continue' in this function
    # only: under the script's 'Stop', Windows PowerShell 5.1 turns a redirected stderr line into a
    # terminating error that would skip the undo below. Lines are kept as lines (no Out-String formatting).
    $ErrorActionPreference = 'Continue'
    $lines = @(& netsh.exe @Arguments 2>&1 | ForEach-Object {
            if ($_ -is [System.Management.Automation.ErrorRecord]) { $_.Exception.Message } else { [string]$_ }
        })
    $code = $LASTEXITCODE
    $text = (@($lines | Where-Object { $_.Trim().Length -gt 0 } | ForEach-Object { $_.Trim() }) -join ' ')
    return [ordered]@{ code = $code; output = $text }
}

function Get-BindingStore($Request) {
    # 'cert_store' absent: no certstorename is passed, so HTTP.sys uses MY (a binding restored as it was,
    # with SslCertStoreName absent). Present it must be Root or My: null is refused, never guessed.
    $property = $Request.PSObject.Properties['cert_store']
    if ($null -eq $property) { return $null }
    if ($null -eq $property.Value) { Stop-Action "'cert_store' must be Root or My, or left out (HTTP.sys then uses MY)" }
    [void](Get-StoreName $Request 'cert_store')
    return [string]$property.Value  # as spelled (MY stays MY), so a restored binding is the one that was there
}

function Set-SslCert([string]$Verb, [string]$IpPort, [string]$Hash, [string]$AppId, $Store) {
    $arguments = @('http', $Verb, 'sslcert', "ipport=$IpPort", "certhash=$Hash", "appid=$AppId")
    if ($Store) { $arguments += "certstorename=$Store" }
    return (Invoke-Netsh $arguments)
}

function Test-BindingIs($Binding, [string]$Hash, [string]$AppId, $Store) {
    if ($null -eq $Binding) { return $false }
    $storeNow = $Binding.cert_store
    return (($Binding.cert_hash -eq $Hash) -and ($Binding.app_id -ieq $AppId) -and ([string]$storeNow -ieq [string]$Store))
}

function Invoke-SetBinding($Request) {
    # An existing binding is replaced in place with 'netsh http update sslcert' (no moment without a binding);
    # a new one is added. The result is read back from SslBindingInfo; a binding left in neither the old nor
    # the requested state is a partial change (exit 3) carrying the previous binding for rollback.
    $ipPort = Get-Text $Request 'ip_port' $IpPortPattern
    $hash = Get-Thumbprint $Request 'cert_hash'
    $appId = Get-Text $Request 'app_id' $AppIdPattern
    $storeName = Get-BindingStore $Request
    $lookIn = 'My'
    if ($storeName) { $lookIn = $storeName }
    $store = Open-Store $lookIn -ReadOnly
    try { $cert = Find-Certificate $store $hash } finally { $store.Close() }
    if (($null -eq $cert) -or (-not $cert.HasPrivateKey)) {
        Stop-Action "the certificate with its private key is not in LocalMachine\$lookIn; binding not changed"
    }
    $previous = Get-Binding $ipPort
    $verb = 'add'
    if ($null -ne $previous) { $verb = 'update' }
    $done = Set-SslCert $verb $ipPort $hash $appId $storeName
    $now = Get-Binding $ipPort
    $result = [ordered]@{ ip_port = $ipPort; previous = $previous; verb = $verb }
    if (Test-BindingIs $now $hash $appId $storeName) { return $result }
    $unchanged = (($null -eq $previous) -and ($null -eq $now)) -or
        (($null -ne $previous) -and (Test-BindingIs $now $previous.cert_hash $previous.app_id $previous.cert_store))
    if ($unchanged) { Stop-Action "netsh http $verb sslcert failed ($($done.code)), binding not changed: $($done.output)" }
    Stop-Partial "netsh http $verb sslcert ($($done.code)) left $ipPort in neither the old nor the requested state: $($done.output)" $result
}

function Invoke-DeleteBinding($Request) {
    $ipPort = Get-Text $Request 'ip_port' $IpPortPattern
    $previous = Get-Binding $ipPort
    if ($null -ne $previous) {
        $deleted = Invoke-Netsh @('http', 'delete', 'sslcert', "ipport=$ipPort")
        if ($deleted.code -ne 0) { Stop-Action "netsh http delete sslcert failed: $($deleted.output)" }
    }
    return [ordered]@{ ip_port = $ipPort; previous = $previous }
}

# --- services --------------------------------------------------------------------------------------------

function Get-ScaleOutService($Request) {
    $name = Get-Text $Request 'name' $ServicePattern
    $service = Get-Service -Name $name -ErrorAction SilentlyContinue
    if ($null -eq $service) { Stop-Action "Cannot find any service with service name '$name'." }
    return $service
}

function Get-StartMode([string]$Name) {
    $found = @(Get-CimInstance -ClassName Win32_Service | Where-Object { $_.Name -eq $Name })
    if ($found.Count -eq 0) { return $null }
    return [string]$found[0].StartMode
}

function Invoke-SetStartMode($Request) {
    $service = Get-ScaleOutService $Request
    $mode = [string](Get-Field $Request 'mode')
    $startup = $null
    switch ($mode.ToLowerInvariant()) {
        'auto' { $startup = 'Automatic' }
        'automatic' { $startup = 'Automatic' }
        'manual' { $startup = 'Manual' }
        'disabled' { $startup = 'Disabled' }
        default { Stop-Action "unknown start mode" }
    }
    $previous = Get-StartMode $service.Name
    Set-Service -Name $service.Name -StartupType $startup
    return [ordered]@{ name = $service.Name; previous = $previous; mode = $startup }
}

function Get-WaitSpan($Request) {
    # How long to wait for a service state: sent by scaleguard below the channel's deadline, so a service that
    # hangs ends as this action's own definite error instead of the channel giving up with the outcome unknown.
    $value = Get-Field $Request 'wait_s'
    if (-not (($value -is [int]) -or ($value -is [long])) -or ($value -lt 1) -or ($value -gt 3600)) {
        Stop-Action "'wait_s' must be a whole number of seconds, 1-3600"
    }
    return [TimeSpan]::FromSeconds([int]$value)
}

function Wait-ServiceStatus($Controller, [string]$Status, [TimeSpan]$Wait, [string]$Doing, $Result) {
    # ServiceController.WaitForStatus with a TimeSpan throws System.ServiceProcess.TimeoutException when the
    # time is up; the request was made, so that is a partial change (exit 3) that the caller rolls back.
    try { $Controller.WaitForStatus($Status, $Wait) }
    catch {
        $Controller.Refresh()
        Stop-Partial "$($Controller.ServiceName) did not reach $Status within $([int]$Wait.TotalSeconds) s after $Doing (now $($Controller.Status))" $Result
    }
}

function Invoke-StartService($Request) {
    $service = Get-ScaleOutService $Request
    $wait = Get-WaitSpan $Request
    $wasRunning = ($service.Status -eq 'Running')
    $result = [ordered]@{ name = $service.Name; was_running = $wasRunning }
    if (-not $wasRunning) {
        $service.Start()
        Wait-ServiceStatus $service 'Running' $wait 'a start' $result
    }
    return $result
}

function Invoke-StopService($Request) {
    $service = Get-ScaleOutService $Request
    $wait = Get-WaitSpan $Request
    $wasRunning = ($service.Status -eq 'Running')
    $result = [ordered]@{ name = $service.Name; was_running = $wasRunning }
    if ($wasRunning) {
        $service.Stop()
        Wait-ServiceStatus $service 'Stopped' $wait 'a stop' $result
    }
    return $result
}

function Invoke-RestartService($Request) {
    # A stopped service stays stopped: an HA passive master must stay passive.
    $service = Get-ScaleOutService $Request
    $wait = Get-WaitSpan $Request
    if ($service.Status -ne 'Running') {
        return [ordered]@{ name = $service.Name; restarted = $false; state = [string]$service.Status }
    }
    $result = [ordered]@{ name = $service.Name; restarted = $true; state = 'Running' }
    $service.Stop()
    Wait-ServiceStatus $service 'Stopped' $wait 'a stop' $result
    try { $service.Start() }
    catch { Stop-Partial "$($service.Name) was stopped and could not be started again: $($_.Exception.Message)" $result }
    Wait-ServiceStatus $service 'Running' $wait 'a start' $result
    return $result
}

# --- SCHANNEL registry values (only ClientAuthTrustMode and SendTrustedIssuerList, only REG_DWORD) --------

function Get-SchannelValueName($Request) {
    return (Get-Text $Request 'name' $SchannelNamePattern)
}

function Get-DwordRequest($Request) {
    # A JSON integer arrives as Int32 or Int64; anything else (text, fraction, true) is refused.
    $value = Get-Field $Request 'value'
    if (-not (($value -is [int]) -or ($value -is [long]))) { Stop-Action "'value' must be an integer" }
    if (($value -lt 0) -or ($value -gt [int]::MaxValue)) { Stop-Action "'value' must be 0-2147483647" }
    return [int]$value
}

function Get-SchannelValue([string]$Name) {
    # $null when the value does not exist. Any other kind, or a DWORD above 2147483647 (read back as a
    # negative Int32), is refused: it could not be put back exactly, so it is never changed.
    if (-not (Test-Path -LiteralPath $SchannelRegistry)) { Stop-Action 'the SCHANNEL key does not exist' }
    $key = Get-Item -LiteralPath $SchannelRegistry
    if (@($key.GetValueNames()) -notcontains $Name) { return $null }
    $kind = $key.GetValueKind($Name)
    if ($kind -ne [Microsoft.Win32.RegistryValueKind]::DWord) {
        Stop-Action "$Name is $kind, not REG_DWORD; not changed"
    }
    $value = [int]$key.GetValue($Name)
    if ($value -lt 0) { Stop-Action "$Name holds a value above 2147483647; not changed" }
    return $value
}

function Invoke-SetSchannelValue($Request) {
    $name = Get-SchannelValueName $Request
    $value = Get-DwordRequest $Request
    $previous = Get-SchannelValue $name
    if ($previous -ne $value) {
        New-ItemProperty -LiteralPath $SchannelRegistry -Name $name -PropertyType DWord -Value $value -Force | Out-Null
    }
    $result = [ordered]@{ name = $name; value = $value; previous = $previous; existed = ($null -ne $previous) }
    if ((Get-SchannelValue $name) -ne $value) {
        # Put back, then read back: a put-back that failed (or was silenced) is no 'nothing changed'.
        try {
            if ($null -eq $previous) {
                Remove-ItemProperty -LiteralPath $SchannelRegistry -Name $name -ErrorAction SilentlyContinue
            } else {
                New-ItemProperty -LiteralPath $SchannelRegistry -Name $name -PropertyType DWord -Value $previous -Force |
                    Out-Null
            }
            $back = Get-SchannelValue $name
        } catch { Stop-Partial "$name could not be verified after writing, nor put back: $($_.Exception.Message)" $result }
        if ($back -ne $previous) { Stop-Partial "$name could not be verified after writing, nor put back" $result }
        Stop-Action "$name could not be verified after writing (the previous value was put back)"
    }
    return $result
}

function Invoke-DeleteSchannelValue($Request) {
    $name = Get-SchannelValueName $Request
    $previous = Get-SchannelValue $name
    if ($null -ne $previous) { Remove-ItemProperty -LiteralPath $SchannelRegistry -Name $name }
    return [ordered]@{ name = $name; previous = $previous; existed = ($null -ne $previous) }
}

# --- the cluster lease of a fix run (HKLM\SOFTWARE\scaleguard\Lease; values are data) ---------------------

function Open-LeaseLock {
    # One machine-wide mutex: two runs asking at the same moment are served one after the other. An agent
    # run killed while holding it (a channel deadline) abandons it: the next wait throws
    # AbandonedMutexException, yet that thread then owns the mutex, so it goes on as after a plain wait.
    $mutex = New-Object System.Threading.Mutex -ArgumentList $false, 'Global\scaleguard-fix-lease'
    try { $owned = $mutex.WaitOne(15000) }
    catch [System.Threading.AbandonedMutexException] { $owned = $true }
    if (-not $owned) { $mutex.Dispose(); Stop-Action 'the lease is busy (another request holds its lock)' }
    return $mutex
}

function Close-LeaseLock($Mutex) {
    $Mutex.ReleaseMutex()
    $Mutex.Dispose()
}

function Initialize-ScaleguardKey {
    # scaleguard's key gets a protected DACL: SYSTEM and Administrators full control, nobody else may write.
    if (-not (Test-Path -LiteralPath $ScaleguardRegistry)) { [void](New-Item -Path $ScaleguardRegistry) }
    $acl = New-Object System.Security.AccessControl.RegistrySecurity
    $acl.SetAccessRuleProtection($true, $false)
    $inherit = [System.Security.AccessControl.InheritanceFlags]::ContainerInherit
    $none = [System.Security.AccessControl.PropagationFlags]::None
    foreach ($sid in @('S-1-5-18', 'S-1-5-32-544')) {
        $identity = New-Object System.Security.Principal.SecurityIdentifier $sid
        $rule = New-Object System.Security.AccessControl.RegistryAccessRule -ArgumentList $identity, 'FullControl', $inherit, $none, 'Allow'
        $acl.AddAccessRule($rule)
    }
    Set-Acl -LiteralPath $ScaleguardRegistry -AclObject $acl
}

function Initialize-LeaseKey {
    Initialize-ScaleguardKey
    if (-not (Test-Path -LiteralPath $LeaseRegistry)) { [void](New-Item -Path $LeaseRegistry) }
}

function Read-Lease {
    if (-not (Test-Path -LiteralPath $LeaseRegistry)) { return $null }
    $values = Get-ItemProperty -LiteralPath $LeaseRegistry
    if (-not $values.PSObject.Properties['RunId']) { return $null }
    $expires = [DateTime]::Parse([string]$values.Expires, [Globalization.CultureInfo]::InvariantCulture,
        [Globalization.DateTimeStyles]::RoundtripKind)
    return [ordered]@{
        run_id = [string]$values.RunId; operator = [string]$values.Operator; host = [string]$values.Host
        started = [string]$values.Started; expires = [string]$values.Expires
        expired = ([DateTime]::UtcNow -ge $expires.ToUniversalTime())
    }
}

function Write-Lease([string]$RunId, [string]$Operator, [string]$HostName, [string]$Started, [int]$Ttl) {
    Initialize-LeaseKey
    $expires = [DateTime]::UtcNow.AddSeconds($Ttl).ToString('o')
    foreach ($pair in @(@('RunId', $RunId), @('Operator', $Operator), @('Host', $HostName), @('Started', $Started), @('Expires', $expires))) {
        Set-ItemProperty -LiteralPath $LeaseRegistry -Name $pair[0] -Value $pair[1] -Type String
    }
}

function Get-Ttl($Request) {
    $value = Get-Field $Request 'ttl_s'
    if (-not (($value -is [int]) -or ($value -is [long]))) { Stop-Action "'ttl_s' must be an integer" }
    if (($value -lt 1) -or ($value -gt 86400)) { Stop-Action "'ttl_s' must be 1-86400 seconds" }
    return [int]$value
}

function Invoke-LeaseAcquire($Request) {
    $runId = Get-Text $Request 'run_id' $RunIdPattern
    $operator = Get-Text $Request 'operator' $LeaseTextPattern
    $hostName = Get-Text $Request 'host' $LeaseTextPattern
    $ttl = Get-Ttl $Request
    $replaces = $null
    if ($null -ne (Get-Field $Request 'replaces' -Optional)) { $replaces = Get-Text $Request 'replaces' $RunIdPattern }
    $mutex = Open-LeaseLock
    try {
        $current = Read-Lease
        if (($null -ne $current) -and ($current.run_id -ne $runId) -and ($current.run_id -ne $replaces)) {
            return [ordered]@{ acquired = $false; holder = $current }
        }
        Write-Lease $runId $operator $hostName ([DateTime]::UtcNow.ToString('o')) $ttl
        return [ordered]@{ acquired = $true; lease = (Read-Lease); previous = $current }
    } finally { Close-LeaseLock $mutex }
}

function Invoke-LeaseRenew($Request) {
    $runId = Get-Text $Request 'run_id' $RunIdPattern
    $ttl = Get-Ttl $Request
    $mutex = Open-LeaseLock
    try {
        $current = Read-Lease
        if (($null -eq $current) -or ($current.run_id -ne $runId)) { Stop-Action 'the lease is not held by this run' }
        Write-Lease $runId $current.operator $current.host $current.started $ttl
        return [ordered]@{ renewed = $true; lease = (Read-Lease) }
    } finally { Close-LeaseLock $mutex }
}

function Invoke-LeaseRelease($Request) {
    $runId = Get-Text $Request 'run_id' $RunIdPattern
    $mutex = Open-LeaseLock
    try {
        $current = Read-Lease
        if (($null -eq $current) -or ($current.run_id -ne $runId)) { return [ordered]@{ released = $false; holder = $current } }
        Remove-Item -LiteralPath $LeaseRegistry
        return [ordered]@{ released = $true; holder = $current }
    } finally { Close-LeaseLock $mutex }
}

function Invoke-LeaseBreak($Request) {
    # Only an expired lease is broken: a live one belongs to a run that may still be changing nodes.
    $holder = Get-Text $Request 'holder' $RunIdPattern
    $mutex = Open-LeaseLock
    try {
        $current = Read-Lease
        if ($null -eq $current) { return [ordered]@{ broken = $false; holder = $null } }
        if ($current.run_id -ne $holder) { Stop-Action 'the lease is now held by another run' }
        if (-not $current.expired) { Stop-Action 'the lease has not expired' }
        Remove-Item -LiteralPath $LeaseRegistry
        return [ordered]@{ broken = $true; holder = $current }
    } finally { Close-LeaseLock $mutex }
}

# --- dispatch ----------------------------------------------------------------------------------------------

$BatchOps = @(
    'read_file', 'write_config', 'set_config_setting', 'restore_file', 'create_certificate', 'import_certificate', 'import_pfx',
    'copy_certificate', 'remove_certificate', 'restore_certificate', 'grant_key_read', 'revoke_key_read',
    'set_binding', 'delete_binding', 'set_service_start_mode', 'start_service', 'stop_service', 'restart_service',
    'set_schannel_value', 'delete_schannel_value'
)
$LeaseOps = @('lease_acquire', 'lease_renew', 'lease_release', 'lease_break')

function Invoke-Action($Request) {
    $op = [string](Get-Field $Request 'op' -Optional)
    $result = $null
    switch ($op) {
        'read_file' { $result = Invoke-ReadFile $Request }
        'write_config' { $result = Invoke-WriteConfig $Request }
        'set_config_setting' { $result = Invoke-SetConfigSetting $Request }
        'restore_file' { $result = Invoke-RestoreFile $Request }
        'create_certificate' { $result = Invoke-CreateCertificate $Request }
        'import_certificate' { $result = Invoke-ImportCertificate $Request }
        'import_pfx' { $result = Invoke-ImportPfx $Request }
        'copy_certificate' { $result = Invoke-CopyCertificate $Request }
        'remove_certificate' { $result = Invoke-RemoveCertificate $Request }
        'restore_certificate' { $result = Invoke-RestoreCertificate $Request }
        'grant_key_read' { $result = Invoke-GrantKeyRead $Request }
        'revoke_key_read' { $result = Invoke-RevokeKeyRead $Request }
        'set_binding' { $result = Invoke-SetBinding $Request }
        'delete_binding' { $result = Invoke-DeleteBinding $Request }
        'set_service_start_mode' { $result = Invoke-SetStartMode $Request }
        'start_service' { $result = Invoke-StartService $Request }
        'stop_service' { $result = Invoke-StopService $Request }
        'restart_service' { $result = Invoke-RestartService $Request }
        'set_schannel_value' { $result = Invoke-SetSchannelValue $Request }
        'delete_schannel_value' { $result = Invoke-DeleteSchannelValue $Request }
        'lease_acquire' { $result = Invoke-LeaseAcquire $Request }
        'lease_renew' { $result = Invoke-LeaseRenew $Request }
        'lease_release' { $result = Invoke-LeaseRelease $Request }
        'lease_break' { $result = Invoke-LeaseBreak $Request }
        default { Stop-Action 'unsupported op' }
    }
    return $result
}

function Invoke-Batch($Request) {
    # Every op is checked before any runs; the first failure stops the batch and is reported in its place.
    $actions = @(Get-Field $Request 'actions')
    if (($actions.Count -lt 1) -or ($actions.Count -gt $BatchMax)) { Stop-Action "'actions' must hold 1-$BatchMax requests" }
    foreach ($action in $actions) {
        $op = [string](Get-Field $action 'op' -Optional)
        if ($op -notin $BatchOps) { Stop-Action 'a batch holds an op that cannot be batched' }
    }
    $results = New-Object System.Collections.Generic.List[object]
    foreach ($action in $actions) {
        $failed = $false
        try { $results.Add([ordered]@{ ok = $true; result = (Invoke-Action $action) }) }
        catch {
            $entry = [ordered]@{ ok = $false; error = [string]$_.Exception.Message }
            if ($script:Partial) {
                $entry.partial = $true
                $entry.result = $script:PartialResult
                $script:Partial = $false
            }
            $results.Add($entry)
            $failed = $true
        }
        if ($failed) { break }
    }
    return [ordered]@{ results = $results.ToArray() }
}

function Test-AgentOp($Request) {
    $op = [string](Get-Field $Request 'op' -Optional)
    return (($op -eq 'batch') -or ($op -in $BatchOps) -or ($op -in $LeaseOps))
}

function Invoke-AgentRequest($Request) {
    # One request (an action, a batch or a lease op) to its answer; a failure throws (Stop-Action).
    $op = [string](Get-Field $Request 'op' -Optional)
    if ($op -eq 'batch') { return (Invoke-Batch $Request) }
    if (($op -in $BatchOps) -or ($op -in $LeaseOps)) { return (Invoke-Action $Request) }
    Stop-Action 'unsupported op'
}

# --- entry point (not part of a runbook) -------------------------------------------------------------------

# Each exit code is also left in $AgentExitCode: run in a runspace of its own (a round that reads the node
# after it, apply/transport.py), 'exit' ends the run but its code is lost (that host ignores it).
$AgentExitCode = 0
try {
    $request = $RequestJson | ConvertFrom-Json
    if (-not (Test-AgentOp $request)) {
        [Console]::Error.WriteLine('scaleguard fix agent: unsupported op')
        $AgentExitCode = 2
        exit 2
    }
    $result = Invoke-AgentRequest $request
} catch {
    [Console]::Error.WriteLine("scaleguard fix agent: $($_.Exception.Message)")
    if ($Partial) {
        [Console]::Out.Write((ConvertTo-AsciiJson ([ordered]@{ partial = $true; result = $PartialResult })))
        $AgentExitCode = 3
        exit 3
    }
    $AgentExitCode = 1
    exit 1
}
[Console]::Out.Write((ConvertTo-AsciiJson $result))
exit 0
