@echo off
rem Double-click helper: starts glmv from this folder (window, or the browser, or the URL).
rem Arguments go to the console launcher, e.g. start.bat --self-test
if "%~1"=="" (
  start "" "%~dp0glmv.exe"
) else (
  "%~dp0glmv-cli.exe" %*
)
