#!/bin/sh
# The one benchmark command: resolverguard vs Unbound side by side (see bench/bench.py for what it does).
exec python3 "$(dirname "$0")/bench.py" "$@"
