<#
.SYNOPSIS
  AnomalySD build script (Windows). The equivalent of build.sh.

.EXAMPLE
  ./build.ps1 -TorchDir C:\libtorch                 # build native engine (Release) + .NET solution
  ./build.ps1 -TorchDir C:\libtorch -Mode test      # build, then ctest + dotnet test
  ./build.ps1 -TorchDir C:\libtorch -Cuda           # compile the CUDA kernels (CUDA libtorch + nvcc)

.PARAMETER TorchDir
  A libtorch folder (holding share/cmake/Torch) or the Torch cmake folder itself. Required on Windows: there
  is no system libtorch. nlohmann-json and GoogleTest must be findable by CMake (e.g. vcpkg: pass
  -CMakeArgs '-DCMAKE_TOOLCHAIN_FILE=C:/vcpkg/scripts/buildsystems/vcpkg.cmake').
#>
param(
  [ValidateSet('build', 'test', 'native', 'managed', 'clean')][string]$Mode = 'build',
  [Parameter(Mandatory = $false)][string]$TorchDir = $env:TORCH_DIR,
  [switch]$Cuda,
  [string]$BuildType = 'Release',
  [string[]]$CMakeArgs = @()
)
$ErrorActionPreference = 'Stop'
$Root = $PSScriptRoot
$NativeBuild = Join-Path $Root 'build/native'

function Invoke-Checked([string]$exe, [string[]]$arguments) {
  & $exe @arguments
  if ($LASTEXITCODE -ne 0) { throw "$exe failed with exit code $LASTEXITCODE" }
}

function Get-TorchArgs {
  if (-not $TorchDir) { throw 'build.ps1: pass -TorchDir <libtorch folder> (or set TORCH_DIR)' }
  foreach ($candidate in @($TorchDir, (Join-Path $TorchDir 'share/cmake/Torch'), (Join-Path $TorchDir 'Torch'))) {
    if (Test-Path (Join-Path $candidate 'TorchConfig.cmake')) { return @("-DTorch_DIR=$candidate") }
  }
  throw "build.ps1: no TorchConfig.cmake under $TorchDir"
}

function Build-Native {
  $cudaFlag = if ($Cuda) { 'ON' } else { 'OFF' }
  Invoke-Checked cmake (@('-S', $Root, '-B', $NativeBuild, "-DANOMALYSD_CUDA=$cudaFlag") + (Get-TorchArgs) + $CMakeArgs)
  Invoke-Checked cmake @('--build', $NativeBuild, '--config', $BuildType, '--parallel')
  # libtorch's DLLs must sit beside anomalysd.dll (Windows has no rpath).
  $torchLib = Join-Path (Split-Path (Split-Path (Split-Path ((Get-TorchArgs)[0] -replace '^-DTorch_DIR=', '')))) 'lib'
  $outDir = Join-Path $NativeBuild "native/$BuildType"
  if ((Test-Path $torchLib) -and (Test-Path $outDir)) { Copy-Item (Join-Path $torchLib '*.dll') $outDir -Force }
}

function Build-Managed {
  $nativeDir = Join-Path $NativeBuild "native/$BuildType/"
  Invoke-Checked dotnet @('build', (Join-Path $Root 'AnomalySD.sln'), '-c', 'Release', '-nologo', "-p:AnomalySDNativeDir=$nativeDir")
}

function Invoke-Tests {
  $failed = $false
  & ctest --test-dir $NativeBuild -C $BuildType --output-on-failure
  if ($LASTEXITCODE -ne 0) { $failed = $true }
  & dotnet test (Join-Path $Root 'AnomalySD.sln') -c Release --no-build -nologo
  if ($LASTEXITCODE -ne 0) { $failed = $true }
  if ($failed) { throw 'tests failed' }
}

switch ($Mode) {
  'build' { Build-Native; Build-Managed }
  'native' { Build-Native }
  'managed' { Build-Managed }
  'test' { Build-Native; Build-Managed; Invoke-Tests }
  'clean' { Remove-Item -Recurse -Force (Join-Path $Root 'build') -ErrorAction SilentlyContinue }
}
