#!/bin/sh
# The same maintenance scenario on either host, driven from the machine running Vagrant:
#   ./scenario.sh openbsd     (pf)
#   ./scenario.sh debian      (nftables)
# Client .31 is redirected and must see the maintenance page (503); client .32 is excepted
# and must keep seeing the app; after `maint off` both see the app again.
set -eu
cd "$(dirname "$0")"

host=${1:?usage: $0 openbsd|debian}
case "$host" in
  openbsd) ip=192.168.56.10; root=doas ;;
  debian)  ip=192.168.56.20; root=sudo ;;
  *) echo "unknown host $host" >&2; exit 2 ;;
esac
redirected=192.168.56.31
excepted=192.168.56.32

on_host()   { vagrant ssh "$host" -c "$root $*" -- -q; }
# Prints "CODE BODY" as seen from one client source address.
from() {
  vagrant ssh client -c "curl -s --max-time 5 --interface $1 -w ' %{http_code}' http://$ip/" -- -q
}
expect() { # expect WHAT SOURCE CODE
  got=$(from "$2")
  case "$got" in
    *" $3") echo "ok   $1: $got" ;;
    *) echo "FAIL $1: wanted HTTP $3 from $2, got: $got" >&2; exit 1 ;;
  esac
}

expect "app before maintenance"       $redirected 200
on_host maint on --except $excepted --reason "scenario"
expect "maintenance page"             $redirected 503
expect "excepted client sees the app" $excepted   200
on_host maint status --json
on_host maint off
expect "app after maintenance"        $redirected 200
expect "excepted client still fine"   $excepted   200
echo "scenario passed on $host"
