# scaleguard node agent (read-only). Windows PowerShell 5.1 compatible.
#
# Delivered over stdin behind the -EncodedCommand bootstrap (bootstrap.ps1), which passes the request
# (JSON data, never PowerShell source) as the only argument. Prints ONE JSON document on stdout:
# raw material only (config bytes, certificate DER, registry values, ACL identities); scaleguard parses
# and judges on its side. A section that cannot be read is null and explained in "errors".
# Output is ASCII-only (non-ASCII escaped as \uXXXX) so no console code page can mangle it.
param([string]$RequestJson)

$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
$WarningPreference = 'SilentlyContinue'  # a warning would reach stderr as CLIXML ahead of any reason
Set-StrictMode -Version 2.0

$AgentSchema = 'scaleguard-agent/1'
$AllSections = @('identity', 'sql', 'configs', 'stores', 'bindings', 'services', 'schannel', 'ssisdb')
$SqlVersions = @('140', '150', '160')
$Errors = New-Object System.Collections.Generic.List[object]

function Add-AgentError([string]$Source, [string]$Message) {
    $Errors.Add([ordered]@{ source = $Source; message = $Message })
}

function New-List {
    return , (New-Object System.Collections.Generic.List[object])
}

function ConvertTo-Hex([byte[]]$Bytes) {
    if ($null -eq $Bytes) { return $null }
    return (($Bytes | ForEach-Object { $_.ToString('x2') }) -join '')
}

function Get-RegistryValue([string]$Path, [string]$Name) {
    $item = Get-ItemProperty -LiteralPath $Path -Name $Name -ErrorAction SilentlyContinue
    if ($null -eq $item) { return $null }
    return $item.$Name
}

function Get-Identity {
    $fqdn = $null
    try { $fqdn = [System.Net.Dns]::GetHostEntry('').HostName } catch { $fqdn = $null }
    $addresses = New-List
    foreach ($nic in [System.Net.NetworkInformation.NetworkInterface]::GetAllNetworkInterfaces()) {
        if ($nic.OperationalStatus -ne 'Up') { continue }
        if ($nic.NetworkInterfaceType -eq 'Loopback') { continue }
        foreach ($unicast in $nic.GetIPProperties().UnicastAddresses) {
            $address = $unicast.Address
            if ($address.IsIPv6LinkLocal) { continue }
            $addresses.Add($address.ToString())
        }
    }
    return [ordered]@{ computer_name = $env:COMPUTERNAME; fqdn = $fqdn; addresses = $addresses }
}

function Get-BinnFolder([string]$Version) {
    $setup = "HKLM:\SOFTWARE\Microsoft\Microsoft SQL Server\$Version\DTS\Setup"
    $sqlPath = Get-RegistryValue $setup 'SQLPath'
    if ($sqlPath) { return (Join-Path $sqlPath 'Binn') }
    return (Join-Path $env:ProgramFiles "Microsoft SQL Server\$Version\DTS\Binn")
}

function Test-MasterMarker([string]$Version) {
    # SSISDB's internal.enable_scaleout looks for SQL_IS_Master under DTS\Setup. Whether setup writes it as a
    # subkey or as a value is not documented, so both count; Test-Path on a value's path is always false.
    $setup = Get-Item -LiteralPath "HKLM:\SOFTWARE\Microsoft\Microsoft SQL Server\$Version\DTS\Setup" -ErrorAction SilentlyContinue
    if ($null -eq $setup) { return $false }
    return ((@($setup.GetSubKeyNames()) -contains 'SQL_IS_Master') -or (@($setup.GetValueNames()) -contains 'SQL_IS_Master'))
}

function Get-SqlInstalls {
    $installs = New-List
    foreach ($version in $SqlVersions) {
        $binn = Get-BinnFolder $version
        $marker = Test-MasterMarker $version
        if ((Test-Path -LiteralPath $binn) -or $marker) {
            $installs.Add([ordered]@{ version = $version; binn = $binn; master_marker = [bool]$marker })
        }
    }
    return , $installs
}

function Get-ConfigFiles {
    $configs = New-List
    foreach ($version in $SqlVersions) {
        $binn = Get-BinnFolder $version
        foreach ($pair in @(@('master', 'MasterSettings.config'), @('worker', 'WorkerSettings.config'))) {
            $path = Join-Path $binn $pair[1]
            if (-not (Test-Path -LiteralPath $path -PathType Leaf)) { continue }
            # A file that is there but cannot be read (locked, denied) still gives the node its role; only
            # its content is unknown. Throwing here emptied the whole list: the node read as one without
            # any settings file.
            $content = $null
            $readError = $null
            try { $content = [Convert]::ToBase64String([System.IO.File]::ReadAllBytes($path)) }
            catch { $readError = $_.Exception.Message }
            $configs.Add([ordered]@{
                    role        = $pair[0]
                    version     = $version
                    path        = $path
                    content_b64 = $content
                    read_error  = $readError
                })
        }
    }
    return , $configs
}

function Get-KeyFile($Cert) {
    # CAPI keys live under MachineKeys, CNG keys under Crypto\Keys; the ACL of that file is who can read.
    # A key that cannot be opened ("Keyset does not exist" - exactly what the audit looks for) throws with
    # Windows' reason, which the caller records in the agent's errors.
    $key = $null
    $reason = $null
    try { $key = [System.Security.Cryptography.X509Certificates.RSACertificateExtensions]::GetRSAPrivateKey($Cert) }
    catch { $reason = $_.Exception.Message }
    if ($null -eq $key) {
        try { $key = [System.Security.Cryptography.X509Certificates.ECDsaCertificateExtensions]::GetECDsaPrivateKey($Cert) }
        catch { if ($null -eq $reason) { $reason = $_.Exception.Message } }
    }
    if ($null -eq $key) {
        if ($null -eq $reason) { $reason = 'neither an RSA nor an ECDSA key' }
        throw (New-Object System.InvalidOperationException "private key not readable: $reason")
    }
    $programData = $env:ProgramData
    if ($key -is [System.Security.Cryptography.RSACryptoServiceProvider]) {
        $name = $key.CspKeyContainerInfo.UniqueKeyContainerName
        return [ordered]@{ provider = 'capi'; file = (Join-Path $programData "Microsoft\Crypto\RSA\MachineKeys\$name") }
    }
    if ($key.PSObject.Properties['Key'] -and $key.Key.PSObject.Properties['UniqueName']) {
        $name = $key.Key.UniqueName
        $capi = Join-Path $programData "Microsoft\Crypto\RSA\MachineKeys\$name"
        if (Test-Path -LiteralPath $capi) { return [ordered]@{ provider = 'capi'; file = $capi } }
        return [ordered]@{ provider = 'cng'; file = (Join-Path $programData "Microsoft\Crypto\Keys\$name") }
    }
    return $null
}

# Windows names well-known accounts in the system's language (Jeder, VORDEFINIERT\Benutzer,
# NT-AUTORITAET\NETZWERKDIENST on a German node); the ACL holds their SIDs, so they are named here as English
# Windows names them, the names scaleguard compares service accounts and broad groups with.
$WellKnownReaders = @{
    'S-1-1-0'      = 'Everyone'
    'S-1-5-11'     = 'NT AUTHORITY\Authenticated Users'
    'S-1-5-18'     = 'NT AUTHORITY\SYSTEM'
    'S-1-5-19'     = 'NT AUTHORITY\LOCAL SERVICE'
    'S-1-5-20'     = 'NT AUTHORITY\NETWORK SERVICE'
    'S-1-5-32-544' = 'BUILTIN\Administrators'
    'S-1-5-32-545' = 'BUILTIN\Users'
    'S-1-5-80-0'   = 'NT SERVICE\ALL SERVICES'
}

function Get-ReaderName([System.Security.Principal.SecurityIdentifier]$Sid) {
    $value = $Sid.Value
    if ($WellKnownReaders.ContainsKey($value)) { return $WellKnownReaders[$value] }
    try { $name = $Sid.Translate([System.Security.Principal.NTAccount]).Value }
    catch { return $value }  # a SID no name is known for (a deleted account) stays a SID
    # A service SID is NT SERVICE\<service name>: the service name is not translated, the authority may be.
    if ($value.StartsWith('S-1-5-80-')) { return 'NT SERVICE\' + $name.Substring($name.IndexOf('\') + 1) }
    return $name
}

function Get-KeyReaders([string]$File) {
    # Identities with an Allow ACE granting read (ReadData, GenericRead or GenericAll) and no Deny of it.
    $readMask = [int64]0x1 -bor [int64]0x80000000 -bor [int64]0x10000000
    $allowed = New-List
    $denied = New-List
    $rules = (Get-Acl -LiteralPath $File).GetAccessRules($true, $true, [System.Security.Principal.SecurityIdentifier])
    foreach ($ace in $rules) {
        $rights = [int64]($ace.FileSystemRights.value__) -band [int64]0xFFFFFFFF
        if (($rights -band $readMask) -eq 0) { continue }
        $who = Get-ReaderName $ace.IdentityReference
        if ($ace.AccessControlType -eq 'Deny') { $denied.Add($who) } else { $allowed.Add($who) }
    }
    $readers = New-List
    foreach ($who in $allowed) {
        if (-not $denied.Contains($who) -and -not $readers.Contains($who)) { $readers.Add($who) }
    }
    return , $readers
}

function Get-StoreCertificates([string]$Store) {
    $certs = New-List
    foreach ($cert in Get-ChildItem -LiteralPath "Cert:\LocalMachine\$Store") {
        $entry = [ordered]@{
            thumbprint      = $cert.Thumbprint
            der_b64         = [Convert]::ToBase64String($cert.RawData)
            has_private_key = [bool]$cert.HasPrivateKey
            key_provider    = $null
            key_file        = $null
            key_readers     = $null
        }
        if ($cert.HasPrivateKey) {
            try {
                $keyFile = Get-KeyFile $cert
                if ($null -ne $keyFile) {
                    $entry.key_provider = $keyFile.provider
                    $entry.key_file = $keyFile.file
                    $entry.key_readers = Get-KeyReaders $keyFile.file
                }
            } catch {
                Add-AgentError "stores/$Store/$($cert.Thumbprint)" $_.Exception.Message
            }
        }
        $certs.Add($entry)
    }
    return , $certs
}

function Get-Stores {
    $stores = [ordered]@{ Root = $null; My = $null }
    foreach ($store in @('Root', 'My')) {
        try { $stores[$store] = Get-StoreCertificates $store }
        catch { Add-AgentError "stores/$store" $_.Exception.Message }
    }
    return $stores
}

function Get-RegistryBindings {
    $base = 'HKLM:\SYSTEM\CurrentControlSet\Services\HTTP\Parameters'
    $entries = New-List
    foreach ($pair in @(@('SslBindingInfo', 'ipport'), @('SslSniBindingInfo', 'hostnameport'), @('SslCcsBindingInfo', 'ccs'))) {
        $folder = Join-Path $base $pair[0]
        if (-not (Test-Path -LiteralPath $folder)) { continue }
        foreach ($key in Get-ChildItem -LiteralPath $folder) {
            $values = Get-ItemProperty -LiteralPath $key.PSPath
            $appId = $null
            if ($values.PSObject.Properties['AppId'] -and $null -ne $values.AppId) {
                $appId = '{' + (New-Object System.Guid (, [byte[]]$values.AppId)).ToString() + '}'
            }
            $store = $null
            if ($values.PSObject.Properties['SslCertStoreName']) { $store = [string]$values.SslCertStoreName }
            $hash = $null
            if ($values.PSObject.Properties['SslCertHash']) { $hash = ConvertTo-Hex ([byte[]]$values.SslCertHash) }
            $entries.Add([ordered]@{
                    ip_port   = $key.PSChildName
                    kind      = $pair[1]
                    cert_hash = $hash
                    app_id    = $appId
                    store     = $store
                })
        }
    }
    return , $entries
}

function Get-Bindings {
    try {
        $entries = Get-RegistryBindings
        return [ordered]@{ source = 'registry'; entries = $entries; netsh_b64 = $null }
    } catch {
        Add-AgentError 'bindings' "SslBindingInfo not readable, using netsh: $($_.Exception.Message)"
    }
    # PowerShell decodes netsh's output into lines (console code page); they are joined as they came, not
    # through Out-String (which formats for the console width), and the exit code is checked.
    $lines = @(& netsh.exe http show sslcert)
    if ($LASTEXITCODE -ne 0) {
        Add-AgentError 'bindings' "netsh http show sslcert failed (exit code $LASTEXITCODE): $(($lines | Select-Object -First 3) -join ' ')"
        return $null
    }
    $bytes = [System.Text.Encoding]::UTF8.GetBytes((($lines | ForEach-Object { [string]$_ }) -join "`r`n"))
    return [ordered]@{ source = 'netsh'; entries = $null; netsh_b64 = [Convert]::ToBase64String($bytes) }
}

function Get-Services {
    $filter = "Name LIKE 'SSISScaleOut%'"
    if (Get-Command Get-CimInstance -ErrorAction SilentlyContinue) {
        $found = @(Get-CimInstance -ClassName Win32_Service -Filter $filter)
    } else {
        $found = @(Get-WmiObject -Class Win32_Service -Filter $filter)
    }
    $services = New-List
    foreach ($service in $found) {
        $services.Add([ordered]@{
                Name      = [string]$service.Name
                State     = [string]$service.State
                StartMode = [string]$service.StartMode
                StartName = [string]$service.StartName
            })
    }
    return , $services
}

function Get-Schannel {
    # Both values are REG_DWORD. What SCHANNEL makes of another kind (a REG_SZ "2" typed into regedit) is not
    # documented, so such a value throws (the section is then unknown) instead of being read as the number
    # its text spells; an absent value stays null (Windows' default applies).
    $path = 'HKLM:\SYSTEM\CurrentControlSet\Control\SecurityProviders\SCHANNEL'
    $result = [ordered]@{ ClientAuthTrustMode = $null; SendTrustedIssuerList = $null }
    if (-not (Test-Path -LiteralPath $path)) { return $result }
    $key = Get-Item -LiteralPath $path
    $names = @($key.GetValueNames())
    foreach ($name in @('ClientAuthTrustMode', 'SendTrustedIssuerList')) {
        if ($names -notcontains $name) { continue }
        $kind = $key.GetValueKind($name)
        if ($kind -ne [Microsoft.Win32.RegistryValueKind]::DWord) {
            throw "$name is $kind, not REG_DWORD; what SCHANNEL makes of it is not known"
        }
        $result[$name] = [int]$key.GetValue($name)
    }
    return $result
}

function Get-SqlServerName($Configs) {
    # Only to know where SSISDB is. The file is JSON or XML; each is read by its own parser, so escapes are
    # undone ("SRV\\INST" in JSON and SRV&amp;X in XML are SRV\INST and SRV&X): a named instance keeps SSISDB.
    foreach ($config in $Configs) {
        if ($config.role -ne 'master') { continue }
        # Not '.': a guess could read another instance's SSISDB as this cluster's.
        if ($null -eq $config.content_b64) { throw 'MasterSettings.config could not be read, so where SSISDB is is not known' }
        # Decoded as its byte order mark says (UTF-8, UTF-16 LE/BE, UTF-32), else UTF-8: a UTF-16 file (what
        # PowerShell's '>' or Notepad's 'Unicode' writes) is not UTF-8, whose decoder turns its BOM into two
        # U+FFFD, so neither parser below would see where the text starts. NULs left are BOM-less UTF-16.
        $stream = New-Object System.IO.MemoryStream -ArgumentList (, [Convert]::FromBase64String($config.content_b64))
        $reader = New-Object System.IO.StreamReader -ArgumentList $stream, ([System.Text.Encoding]::UTF8), $true
        try { $text = $reader.ReadToEnd() } finally { $reader.Dispose() }
        if ($text.IndexOf([char]0) -ge 0) { $text = $text.Replace([string][char]0, '') }
        $text = $text.Trim([char]0xFEFF, ' ', "`r", "`n", "`t")
        $name = $null
        if ($text.StartsWith('{')) {
            $parsed = ConvertFrom-Json -InputObject $text
            if ($parsed.PSObject.Properties['SqlServerName']) { $name = [string]$parsed.SqlServerName }
        } else {
            $document = New-Object System.Xml.XmlDocument
            $document.XmlResolver = $null
            $document.LoadXml($text)
            $node = $document.SelectSingleNode('/*/*[local-name()="SqlServerName"]')
            if ($null -ne $node) { $name = $node.InnerText }
        }
        if ($name -and $name.Trim()) { return $name.Trim() }
    }
    return '.'
}

function Invoke-SsisDbQuery($Connection, [string]$Sql) {
    $command = $Connection.CreateCommand()
    $command.CommandText = $Sql
    $command.CommandTimeout = 15
    $reader = $command.ExecuteReader()
    $rows = New-List
    try {
        while ($reader.Read()) {
            $row = [ordered]@{}
            for ($i = 0; $i -lt $reader.FieldCount; $i++) {
                $value = $reader.GetValue($i)
                if ($value -is [System.DBNull]) { $value = $null }
                elseif ($value -is [System.DateTimeOffset]) { $value = $value.ToString('o') }
                elseif ($value -is [System.Guid]) { $value = $value.ToString() }
                $row[$reader.GetName($i)] = $value
            }
            $rows.Add($row)
        }
    } finally { $reader.Close() }
    return , $rows
}

function Get-SsisDb($Configs, [int]$TimeoutSeconds) {
    $isMaster = $false
    foreach ($config in $Configs) { if ($config.role -eq 'master') { $isMaster = $true } }
    if (-not $isMaster) { return $null }
    $builder = New-Object System.Data.SqlClient.SqlConnectionStringBuilder
    $builder['Data Source'] = Get-SqlServerName $Configs
    $builder['Initial Catalog'] = 'SSISDB'
    $builder['Integrated Security'] = $true
    $builder['Connect Timeout'] = $TimeoutSeconds
    $connection = New-Object System.Data.SqlClient.SqlConnection $builder.ConnectionString
    try {
        $connection.Open()
        $properties = [ordered]@{}
        foreach ($row in (Invoke-SsisDbQuery $connection 'SELECT property_name, property_value FROM catalog.master_properties')) {
            $properties[[string]$row.property_name] = [string]$row.property_value
        }
        $agents = Invoke-SsisDbQuery $connection 'SELECT WorkerAgentId, MachineName, DisplayName, IsEnabled, LastOnlineTime FROM catalog.worker_agents'
        return [ordered]@{ master_properties = $properties; worker_agents = $agents }
    } finally { $connection.Dispose() }
}

function ConvertTo-AsciiJson($Value) {
    $json = ConvertTo-Json -InputObject $Value -Depth 8 -Compress
    return [regex]::Replace($json, '[^\x00-\x7F]', { param($m) '\u{0:x4}' -f [int][char]$m.Value })
}

$request = $RequestJson | ConvertFrom-Json
if ($request.op -ne 'collect') {
    [Console]::Error.WriteLine("scaleguard agent: unsupported op '$($request.op)'")
    exit 2
}
$sections = $AllSections
if ($request.PSObject.Properties['sections'] -and $null -ne $request.sections) { $sections = @($request.sections) }
$sqlTimeout = 5
if ($request.PSObject.Properties['sql_timeout_s'] -and $null -ne $request.sql_timeout_s) { $sqlTimeout = [int]$request.sql_timeout_s }

$document = [ordered]@{ schema = $AgentSchema; op = 'collect'; errors = $Errors }
try { $document.identity = Get-Identity }
catch {
    Add-AgentError 'identity' $_.Exception.Message
    $document.identity = [ordered]@{ computer_name = $env:COMPUTERNAME; fqdn = $null; addresses = $null }
}
$configs = $null  # not looked for: unknown, never "no settings file"
try { $configs = Get-ConfigFiles } catch { Add-AgentError 'configs' $_.Exception.Message }
foreach ($section in $sections) {
    if ($section -eq 'identity') { continue }
    $value = $null
    try {
        switch ($section) {
            'sql' { $value = Get-SqlInstalls }
            'configs' { $value = $configs }
            'stores' { $value = Get-Stores }
            'bindings' { $value = Get-Bindings }
            'services' { $value = Get-Services }
            'schannel' { $value = Get-Schannel }
            'ssisdb' { $value = Get-SsisDb $configs $sqlTimeout }
            default { Add-AgentError $section 'unknown section' }
        }
    } catch {
        $value = $null
        if ($section -eq 'ssisdb') { Add-AgentError 'ssisdb' "SSISDB not reachable: $($_.Exception.Message)" }
        else { Add-AgentError $section $_.Exception.Message }
    }
    $document[$section] = $value
}
[Console]::Out.Write((ConvertTo-AsciiJson $document))
exit 0
