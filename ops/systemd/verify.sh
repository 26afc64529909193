#!/usr/bin/env bash
# Checks the units in this folder offline, without a running systemd (CI runs it in a
# container): `systemd-analyze verify` in a scratch root holding systemd's own units, these
# units, and placeholder executables at their ExecStart paths (verify wants those to exist).
# verify exits 0 on a misspelt key or a bad value (it logs "ignoring"), so any output fails.
# Then `systemd-analyze security --offline` must rate each unit at most 2.0 (it is 1.4: what
# remains is network access, which these services need, and ProcSubset=, which Node.js does).
# Needs Debian's `systemd` package (for systemd-analyze).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
if ! command -v systemd-analyze >/dev/null 2>&1; then
  echo "verify.sh: systemd-analyze is missing (Debian: apt-get install systemd)" >&2
  exit 1
fi
units=/usr/lib/systemd/system
[ -d "$units" ] || units=/lib/systemd/system
root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/etc/systemd/system" "$root/usr/lib/systemd"
cp -r "$units" "$root/usr/lib/systemd/system"

check() { # unit file -> prints what verify says; fails on any of it
  local unit="$1" name out
  name="$(basename "$unit")"
  cp "$unit" "$root/etc/systemd/system/$name"
  for exe in $(sed -n 's/^ExecStart=[-@:+!]*\([^ ]*\).*/\1/p' "$unit"); do
    mkdir -p "$root$(dirname "$exe")"
    printf '#!/bin/sh\nexit 0\n' >"$root$exe"
    chmod +x "$root$exe"
  done
  if ! out="$(systemd-analyze verify --man=no --generators=no --root="$root" "$name" 2>&1)" \
    || [ -n "$out" ]; then
    printf '%s\n' "${out:-verify failed}"
    return 1
  fi
}

# The check itself must catch a bad value, or a pass below would mean nothing.
broken="$root/apiary-broken.service"
sed 's/^KillMode=.*/KillMode=sometimes/' "$here/apiary-aggregator.service" >"$broken"
if check "$broken" >/dev/null; then
  echo "verify.sh: systemd-analyze verify did not catch a bad KillMode=; cannot check" >&2
  exit 1
fi
rm -f "$root/etc/systemd/system/apiary-broken.service"

status=0
for unit in "$here"/*.service; do
  name="$(basename "$unit")"
  if ! check "$unit"; then
    echo "FAIL $name: systemd-analyze verify" >&2
    status=1
    continue
  fi
  report="$root/$name.security"
  if ! systemd-analyze security --offline=yes --root="$root" --threshold=20 "$name" \
    >"$report" 2>&1; then
    grep '✗' "$report" >&2 || true
    tail -n 1 "$report" >&2
    echo "FAIL $name: security exposure over 2.0" >&2
    status=1
    continue
  fi
  echo "ok   $name: verified; $(grep -o 'Overall exposure level.*' "$report")"
done
exit "$status"
