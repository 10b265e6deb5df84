# --- the runbook driver: each step looked at, applied if still to do, reported -------------------------------

$RunbookRegistry = 'HKLM:\SOFTWARE\scaleguard\Runbook'
$RunbookMarkPattern = '^[0-9a-f]{16}-s[0-9]{3,6}$'

function Test-RestartMark([string]$Name) {
    if (-not (Test-Path -LiteralPath $RunbookRegistry)) { return $false }
    return (@((Get-Item -LiteralPath $RunbookRegistry).GetValueNames()) -contains $Name)
}

function Set-RestartMark([string]$Name) {
    # Under scaleguard's own key (SYSTEM and Administrators only, as the lease's): this plan step restarted.
    if (-not (Test-Path -LiteralPath $ScaleguardRegistry)) { Initialize-ScaleguardKey }
    if (-not (Test-Path -LiteralPath $RunbookRegistry)) { [void](New-Item -Path $RunbookRegistry) }
    Set-ItemProperty -LiteralPath $RunbookRegistry -Name $Name -Value ([DateTime]::UtcNow.ToString('o')) -Type String
}

function New-Verdict([string]$Verdict, [string]$Reason, $Result) {
    return @{ verdict = $Verdict; reason = $Reason; result = $Result }
}

function Read-RunbookData {
    # The data line as JSON: base64 only, strict UTF-8, the runbook schema.
    if ($RunbookData -cnotmatch '^[A-Za-z0-9+/]+={0,2}$') { Stop-Action 'the runbook data line is not base64' }
    $strict = New-Object System.Text.UTF8Encoding -ArgumentList $false, $true
    $data = ConvertFrom-Json -InputObject ($strict.GetString([Convert]::FromBase64String($RunbookData)))
    if ([string](Get-Field $data 'format') -cne 'scaleguard-runbook/1') { Stop-Action 'the runbook data is not scaleguard-runbook/1' }
    return $data
}

function Test-ThisNode([string]$Node) {
    # The runbook of another node is never run here (a plan names a node by its name or its FQDN).
    # %COMPUTERNAME% is the NetBIOS name, cut to 15 characters; Dns.GetHostName() is the full host name
    # (local, no DNS query), so a node named WORKERNODE-PROD01 is recognised too. An address is refused.
    $wanted = $Node.ToUpperInvariant()
    foreach ($own in @([string]$env:COMPUTERNAME, [System.Net.Dns]::GetHostName())) {
        $name = ([string]$own).ToUpperInvariant()
        if (($name.Length -gt 0) -and (($wanted -ceq $name) -or $wanted.StartsWith($name + '.', [StringComparison]::Ordinal))) { return $true }
    }
    return $false
}

function Find-ServiceName([string]$Role) {
    # The plan left the name to the node: its one Scale Out service of that role (SSISScaleOutWorker150...).
    $pattern = '^SSISScaleOutMaster1[4-9]0$'
    if ($Role -eq 'worker') { $pattern = '^SSISScaleOutWorker1[4-9]0$' }
    $names = @(Get-Service -Name 'SSISScaleOut*' -ErrorAction SilentlyContinue | Where-Object { $_.Name -match $pattern } | ForEach-Object { $_.Name })
    if ($names.Count -ne 1) { Stop-Action "this node has $($names.Count) Scale Out $Role services; the plan must name one" }
    return [string]$names[0]
}

function Test-Changed($Outcome) {
    # An applied step counts as a change unless its answer says it changed nothing (as --apply counts it);
    # with -CheckOnly a step that would be applied counts as one.
    if ($Outcome.status -eq 'pending') { return $true }
    if ($Outcome.status -ne 'applied') { return $false }
    $result = $Outcome.result
    if (($result -is [System.Collections.IDictionary]) -and $result.Contains('changed')) { return [bool]$result['changed'] }
    return $true
}

function Test-Created($Check) {
    $storeName = Get-StoreName $Check
    $friendly = Get-Text $Check 'friendly_name' '^[A-Za-z0-9 ._-]{1,64}$'
    $store = Open-Store $storeName -ReadOnly
    try { $found = @($store.Certificates | Where-Object { ($_.FriendlyName -ceq $friendly) -and $_.HasPrivateKey }) }
    finally { $store.Close() }
    if ($found.Count -eq 0) { return (New-Verdict 'todo' '' $null) }
    if ($found.Count -gt 1) { return (New-Verdict 'stale' "LocalMachine\$storeName holds $($found.Count) certificates named '$friendly'" $null) }
    return (New-Verdict 'done' "this step made $($found[0].Thumbprint) in LocalMachine\$storeName before" (Get-CertDocument $found[0] $storeName))
}

function Test-InStore($Check) {
    $storeName = Get-StoreName $Check
    $thumbprint = Get-Thumbprint $Check
    $store = Open-Store $storeName -ReadOnly
    try { $cert = Find-Certificate $store $thumbprint } finally { $store.Close() }
    return ($null -ne $cert)
}

function Test-KeyReadable($Check) {
    try {
        $target = Get-KeyTarget $Check
        if ((Get-ReadState (Get-KeyAcl $target.file) $target.sid) -eq 'allowed') {
            return (New-Verdict 'done' "$($target.account) can already read the key" $null)
        }
    } catch { return (New-Verdict 'todo' '' $null) }
    return (New-Verdict 'todo' '' $null)
}

function Test-Setting($Check) {
    $role = Get-Text $Check 'role' '^(master|worker)$'
    $setting = [string](Get-Field $Check 'setting')
    $value = [string](Get-Field $Check 'value')
    try { $current = (Get-ConfigSetting $role $setting).Trim() }
    catch { return (New-Verdict 'stale' "the $role settings file could not be read: $($_.Exception.Message)" $null) }
    if ($current -ceq $value) { return (New-Verdict 'done' "$setting is already '$value'" $null) }
    $expected = [string](Get-Field $Check 'expected' -Optional)
    if ([bool](Get-Field $Check 'expected_known' -Optional) -and ($current -cne $expected.Trim())) {
        return (New-Verdict 'stale' "$setting was '$expected' when planned, now '$current'" $null)
    }
    return (New-Verdict 'todo' '' $null)
}

function Test-BindingState($Check) {
    $ipPort = Get-Text $Check 'ip_port' $IpPortPattern
    $hash = Get-Thumbprint $Check 'cert_hash'
    $store = [string](Get-Field $Check 'cert_store' -Optional)
    if ($store.Length -eq 0) { $store = 'MY' }
    $now = Get-Binding $ipPort
    $nowHash = ''
    if ($null -ne $now) {
        $nowHash = [string]$now.cert_hash
        $nowStore = [string]$now.cert_store
        if ($nowStore.Length -eq 0) { $nowStore = 'MY' }
        if (($nowHash -eq $hash) -and ($nowStore -ieq $store) -and ([string]$now.app_id -ieq [string](Get-Field $Check 'app_id'))) {
            return (New-Verdict 'done' "$ipPort already serves $hash from $store" $null)
        }
    }
    $was = [string](Get-Field $Check 'expected_hash' -Optional)
    if ([bool](Get-Field $Check 'expected_known' -Optional) -and ($was -ne $nowHash) -and ($nowHash -ne $hash)) {
        return (New-Verdict 'stale' "$ipPort served '$was' when planned, now '$nowHash'" $null)
    }
    return (New-Verdict 'todo' '' $null)
}

function Test-SchannelState($Check) {
    $name = Get-SchannelValueName $Check
    try { $current = Get-SchannelValue $name } catch { return (New-Verdict 'todo' '' $null) }
    $value = Get-DwordRequest $Check
    if ($current -eq $value) { return (New-Verdict 'done' "$name is already $value" $null) }
    $expected = Get-Field $Check 'expected' -Optional
    if ([bool](Get-Field $Check 'expected_known' -Optional) -and ($current -ne $expected)) {
        return (New-Verdict 'stale' "$name was '$expected' when planned, now '$current'" $null)
    }
    return (New-Verdict 'todo' '' $null)
}

function Get-ModeWord([string]$Mode) {
    switch ($Mode.ToLowerInvariant()) {
        'auto' { return 'auto' }
        'automatic' { return 'auto' }
        'manual' { return 'manual' }
        'disabled' { return 'disabled' }
    }
    return ''
}

function Test-StartModeState($Check, [string]$Name) {
    $now = Get-StartMode $Name
    if ($null -eq $now) { return (New-Verdict 'todo' '' $null) }
    if ((Get-ModeWord $now) -eq (Get-ModeWord ([string](Get-Field $Check 'mode')))) { return (New-Verdict 'done' "$Name already starts $now" $null) }
    $expected = [string](Get-Field $Check 'expected' -Optional)
    if (($expected.Length -gt 0) -and ((Get-ModeWord $now) -ne (Get-ModeWord $expected))) {
        return (New-Verdict 'stale' "$Name started $expected when planned, now $now" $null)
    }
    return (New-Verdict 'todo' '' $null)
}

function Get-StepVerdict($Step, $Request, $Outcomes) {
    $check = Get-Field $Step 'check'
    $kind = [string](Get-Field $check 'kind')
    if ($kind -eq 'none') { return (New-Verdict 'todo' '' $null) }
    if ($kind -eq 'created') { return (Test-Created $check) }
    if ($kind -eq 'present') {
        if (Test-InStore $check) { return (New-Verdict 'done' "LocalMachine\$($check.store) already holds $($check.thumbprint)" $null) }
        return (New-Verdict 'todo' '' $null)
    }
    if ($kind -eq 'absent') {
        if (-not (Test-InStore $check)) { return (New-Verdict 'done' "LocalMachine\$($check.store) no longer holds $($check.thumbprint)" $null) }
        return (New-Verdict 'todo' '' $null)
    }
    if ($kind -eq 'key_readable') { return (Test-KeyReadable $check) }
    if ($kind -eq 'setting') { return (Test-Setting $check) }
    if ($kind -eq 'binding') { return (Test-BindingState $check) }
    if ($kind -eq 'schannel') { return (Test-SchannelState $check) }
    if ($kind -eq 'start_mode') { return (Test-StartModeState $check ([string](Get-Field $Request 'name'))) }
    if ($kind -eq 'running') {
        $service = Get-ScaleOutService $Request
        if ($service.Status -eq 'Running') { return (New-Verdict 'done' "$($service.Name) already runs" $null) }
        return (New-Verdict 'todo' '' $null)
    }
    if ($kind -eq 'restart') {
        foreach ($id in @(Get-Field $check 'after' -Optional)) {
            if ($Outcomes.Contains([string]$id) -and (Test-Changed $Outcomes[[string]$id])) { return (New-Verdict 'todo' '' $null) }
        }
        if ([bool](Get-Field $check 'unit_changed' -Optional)) {
            if (Test-RestartMark (Get-Text $check 'mark' $RunbookMarkPattern)) {
                return (New-Verdict 'done' 'this step restarted the service after those changes already' $null)
            }
            return (New-Verdict 'todo' '' $null)
        }
        return (New-Verdict 'done' 'nothing else in its unit changed on this node' $null)
    }
    Stop-Action "the runbook names an unknown check"
}

$RunbookWaits = $false

function Get-RefValue($Ref, $Outcomes) {
    # A value an earlier step of this runbook returned (the thumbprint or DER of the certificate it made).
    $from = Get-Text $Ref 'from_step' '^s[0-9]{3,6}$'
    $field = Get-Text $Ref 'field' '^(thumbprint|der_b64)$'
    $result = $null
    if ($Outcomes.Contains($from)) {
        $result = $Outcomes[$from].result
        if ($Outcomes[$from].status -eq 'pending') {
            $script:RunbookWaits = $true
            Stop-Action "it needs the $field of $from, which is made when the runbook runs"
        }
    }
    if (-not ($result -is [System.Collections.IDictionary]) -or -not $result.Contains($field)) {
        Stop-Action "it needs the $field of $from, which this runbook did not produce"
    }
    return [string]$result[$field]
}

function Set-StepRefs($Step, $Request, $Outcomes) {
    $refs = Get-Field $Step 'refs' -Optional
    if ($null -eq $refs) { return }
    $check = Get-Field $Step 'check'
    foreach ($property in @($refs.PSObject.Properties)) {
        if ($property.Name -cnotmatch '^(thumbprint|der_b64|value|cert_hash)$') { Stop-Action 'the runbook names an unknown reference' }
        $value = Get-RefValue $property.Value $Outcomes
        $Request | Add-Member -NotePropertyName $property.Name -NotePropertyValue $value -Force
        $slot = $check.PSObject.Properties[$property.Name]
        if ($null -ne $slot) { $slot.Value = $value }
    }
}

function Invoke-RunbookStep($Step, $Outcomes) {
    $entry = [ordered]@{ id = [string](Get-Field $Step 'id'); status = 'failed'; reason = $null; result = $null; error = $null; partial = $false }
    try {
        $request = Get-Field $Step 'request'
        $role = Get-Field $Step 'service_role' -Optional
        if ($null -ne $role) {
            $request | Add-Member -NotePropertyName 'name' -NotePropertyValue (Find-ServiceName ([string]$role)) -Force
        }
        Set-StepRefs $Step $request $Outcomes
        $verdict = Get-StepVerdict $Step $request $Outcomes
        if ($verdict.verdict -eq 'done') {
            $entry.status = 'done'
            $entry.reason = $verdict.reason
            $entry.result = $verdict.result
            return $entry
        }
        if ($verdict.verdict -eq 'stale') {
            $entry.status = 'stale'
            $entry.reason = $verdict.reason
            return $entry
        }
        if ($CheckOnly) {
            $entry.status = 'pending'
            $entry.reason = 'would be applied'
            return $entry
        }
        $entry.result = Invoke-AgentRequest $request
        $entry.status = 'applied'
        if ([string]$Step.check.kind -eq 'restart') {
            try { Set-RestartMark (Get-Text $Step.check 'mark' $RunbookMarkPattern) }
            catch { $entry.reason = "restarted, but the mark for a second run was not written: $($_.Exception.Message)" }
        }
    } catch {
        $entry.error = [string]$_.Exception.Message
        if ($CheckOnly -and $script:RunbookWaits) {
            $entry.status = 'pending'
            $entry.reason = $entry.error
            $entry.error = $null
            $script:RunbookWaits = $false
        }
        if ($script:Partial) {
            $entry.partial = $true
            $entry.result = $script:PartialResult
            $script:Partial = $false
        }
    }
    return $entry
}

function Limit-RunbookText($Text, [int]$Max) {
    # A reason or error quotes node text (a settings value, netsh output): cut so the result stays within what
    # --import-results accepts (reason 4096, error 8192 characters), or the node's whole result is refused.
    if ($null -eq $Text) { return $null }
    $value = [string]$Text
    if ($value.Length -le $Max) { return $value }
    return ($value.Substring(0, $Max) + ' [cut]')
}

$RunbookOutcome = $null
$RunbookStopped = $null
try {
    $data = Read-RunbookData
    $node = Get-Text $data 'node' '^[^\x00-\x1f\\/]{1,253}$'
    if (-not (Test-ThisNode $node)) { Stop-Action "this runbook is for $node, not $env:COMPUTERNAME" }
    $outcomes = [ordered]@{}
    $reported = New-Object System.Collections.Generic.List[object]
    foreach ($step in @(Get-Field $data 'steps')) {
        $id = Get-Text $step 'id' '^s[0-9]{3,6}$'
        if ($null -ne $RunbookStopped) {
            $reported.Add([ordered]@{ id = $id; status = 'skipped'; reason = $RunbookStopped; result = $null; error = $null; partial = $false })
            continue
        }
        $entry = Invoke-RunbookStep $step $outcomes
        $entry.reason = Limit-RunbookText $entry.reason 2000
        $entry.error = Limit-RunbookText $entry.error 4000
        $outcomes[$id] = $entry
        $reported.Add($entry)
        if (($entry.status -eq 'stale') -or ($entry.status -eq 'failed')) { $RunbookStopped = "not run: $id before it is $($entry.status)" }
    }
    $RunbookOutcome = [ordered]@{
        format = 'scaleguard-runbook-result/1'; plan_sha256 = [string]$data.plan_sha256; run_id = [string]$data.run_id
        cluster = [string]$data.cluster; node = $node; wave = [int]$data.wave; computer = [string]$env:COMPUTERNAME
        check_only = [bool]$CheckOnly; steps = $reported.ToArray()
    }
} catch {
    [Console]::Error.WriteLine("scaleguard runbook: $($_.Exception.Message)")
    exit 2
}
[Console]::Out.Write((ConvertTo-AsciiJson $RunbookOutcome))
if ($null -ne $RunbookStopped) { exit 1 }
exit 0
