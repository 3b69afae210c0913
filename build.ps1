<#
.SYNOPSIS
  AnomalySD build script (Windows; also runs on Linux with PowerShell 7). The equivalent of build.sh.

.EXAMPLE
  ./build.ps1 -TorchDir C:\libtorch                 # build native engine (Release) + .NET solution + ResNet18 backbone
  ./build.ps1 -TorchDir C:\libtorch -Mode test      # build, then ctest + dotnet test; prints `tests: N passed, M failed, K skipped`
  ./build.ps1 -TorchDir C:\libtorch -Cuda           # compile the CUDA kernels (CUDA libtorch + nvcc)
  pwsh ./build.ps1 -Mode configure                  # Linux: CMake configure only (Debian's libtorch when -TorchDir is absent)

.PARAMETER TorchDir
  A libtorch folder (holding share/cmake/Torch) or the Torch cmake folder itself. Required on Windows: there
  is no system libtorch. nlohmann-json and GoogleTest must be findable by CMake (e.g. vcpkg: pass
  -CMakeArgs '-DCMAKE_TOOLCHAIN_FILE=C:/vcpkg/scripts/buildsystems/vcpkg.cmake'). On Linux it may be omitted.

.PARAMETER Mode
  build (default): native + managed + ResNet18; test: build, then the tests; native, managed, configure (CMake
  configure only), clean.
#>
param(
  [ValidateSet('build', 'test', 'native', 'managed', 'configure', 'clean')][string]$Mode = 'build',
  [Parameter(Mandatory = $false)][string]$TorchDir = $env:TORCH_DIR,
  [switch]$Cuda,
  [string]$BuildType = 'Release',
  [string[]]$CMakeArgs = @()
)
$ErrorActionPreference = 'Stop'
$OnWindows = $IsWindows -or ($PSVersionTable.PSEdition -eq 'Desktop')  # Windows PowerShell 5.1 has no $IsWindows
$Root = $PSScriptRoot
$NativeBuild = Join-Path $Root 'build/native'

function Invoke-Checked([string]$exe, [string[]]$arguments) {
  & $exe @arguments
  if ($LASTEXITCODE -ne 0) { throw "$exe failed with exit code $LASTEXITCODE" }
}

function Get-TorchArgs {
  if (-not $TorchDir) {
    if ($OnWindows) { throw 'build.ps1: pass -TorchDir <libtorch folder> (or set TORCH_DIR)' }
    return @()  # Linux: the system libtorch (Debian's libtorch-dev), as build.sh does
  }
  foreach ($candidate in @($TorchDir, (Join-Path $TorchDir 'share/cmake/Torch'), (Join-Path $TorchDir 'Torch'))) {
    if (Test-Path (Join-Path $candidate 'TorchConfig.cmake')) { return @("-DTorch_DIR=$candidate") }
  }
  throw "build.ps1: no TorchConfig.cmake under $TorchDir"
}

# The folder holding anomalysd.dll / libanomalysd.so: multi-config generators (Visual Studio) add the configuration.
function Get-NativeOut {
  $multi = Join-Path $NativeBuild "native/$BuildType"
  if (Test-Path $multi) { return $multi }
  return (Join-Path $NativeBuild 'native')
}

function Invoke-Configure {
  $cudaFlag = if ($Cuda) { 'ON' } else { 'OFF' }
  Invoke-Checked cmake (@('-S', $Root, '-B', $NativeBuild, "-DCMAKE_BUILD_TYPE=$BuildType", "-DANOMALYSD_CUDA=$cudaFlag") + (Get-TorchArgs) + $CMakeArgs)
}

function Build-Native {
  Invoke-Configure
  Invoke-Checked cmake @('--build', $NativeBuild, '--config', $BuildType, '--parallel')
  # Windows has no rpath: libtorch's DLLs must sit beside anomalysd.dll.
  $torchArgs = Get-TorchArgs
  if ($OnWindows -and $torchArgs.Count -gt 0) {
    $torchLib = Join-Path (Split-Path (Split-Path (Split-Path ($torchArgs[0] -replace '^-DTorch_DIR=', '')))) 'lib'
    if (Test-Path $torchLib) { Copy-Item (Join-Path $torchLib '*.dll') (Get-NativeOut) -Force }
  }
}

function Build-Managed {
  $nativeDir = (Get-NativeOut) + [IO.Path]::DirectorySeparatorChar
  Invoke-Checked dotnet @('build', (Join-Path $Root 'AnomalySD.sln'), '-c', 'Release', '-nologo', '-v', 'quiet', "-p:AnomalySDNativeDir=$nativeDir")
  # The ImageNet ResNet18 backbone (prototype features and the offline distance), as build.sh writes it.
  $resnet = Join-Path (Get-NativeOut) 'resnet18_imagenet.safetensors'
  $env:ANOMALYSD_NATIVE_PATH = Get-NativeOut
  & dotnet run --project (Join-Path $Root 'tools/AnomalySD.ModelPrep') -c Release --no-build -- resnet18 --out $resnet
  if ($LASTEXITCODE -ne 0) {
    Write-Warning "could not write $resnet (ImageNet ResNet18 backbone; see the message above). The build goes on; rerun ./build.ps1 -Mode managed once the cause is fixed."
  }
}

function Invoke-Tests {
  $failed = $false
  & ctest --test-dir $NativeBuild -C $BuildType --output-on-failure 2>&1 | Tee-Object -Variable ctestOut | Out-Host
  if ($LASTEXITCODE -ne 0) { $failed = $true }
  & dotnet test (Join-Path $Root 'AnomalySD.sln') -c Release --no-build -nologo 2>&1 | Tee-Object -Variable dotnetOut | Out-Host
  if ($LASTEXITCODE -ne 0) { $failed = $true }
  # The same summary line as build.sh: ctest's "N tests failed out of T" counts skipped tests as passed.
  $np = 0; $nf = 0; $ns = 0
  foreach ($line in $ctestOut) {
    if ("$line" -match 'tests passed, (\d+) tests failed out of (\d+)') { $nf = [int]$Matches[1]; $np = [int]$Matches[2] - $nf }
    if ("$line" -match '\(Skipped\)$') { $ns++ }
  }
  $np -= $ns
  $mp = 0; $mf = 0; $ms = 0
  foreach ($line in $dotnetOut) {
    if ("$line" -match 'Failed:\s*(\d+), Passed:\s*(\d+), Skipped:\s*(\d+)') { $mf += [int]$Matches[1]; $mp += [int]$Matches[2]; $ms += [int]$Matches[3] }
  }
  Write-Output "tests: $($np + $mp) passed, $($nf + $mf) failed, $($ns + $ms) skipped (CUDA tests skip without a GPU)"
  if ($failed) { throw 'tests failed' }
}

switch ($Mode) {
  'build' { Build-Native; Build-Managed }
  'native' { Build-Native }
  'managed' { Build-Managed }
  'configure' { Invoke-Configure }
  'test' { Build-Native; Build-Managed; Invoke-Tests }
  'clean' { Remove-Item -Recurse -Force (Join-Path $Root 'build') -ErrorAction SilentlyContinue }
}
