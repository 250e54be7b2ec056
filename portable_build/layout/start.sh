#!/bin/sh
# Double-click helper: starts glmv from this folder (window, or the browser, or the URL).
# Any arguments go to glmv, e.g. ./start.sh --self-test
exec "$(dirname "$0")/glmv" "$@"
