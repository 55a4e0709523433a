#!/bin/sh
# Provisions the OpenBSD host: rust from packages, maint built from /maint, httpd as the
# app on port 80, and the `anchor "maint"` line in pf.conf.
set -eu

pkg_add rust
# maint needs Rust 1.89 or later (std's file locks): OpenBSD 7.8's package or newer.
rustc --version
ver=$(rustc --version | awk '{print $2}')
case "$ver" in
  1.[0-7][0-9].*|1.8[0-8].*)
    echo "rustc $ver is too old for maint (needs 1.89): use an OpenBSD 7.8+ box" >&2
    exit 1 ;;
esac

cd /maint
cargo build --release --locked -p maint
install -m 0555 target/release/maint /usr/local/bin/maint

# The app: httpd on port 80 with a page saying so.
mkdir -p /var/www/htdocs
echo "the app" > /var/www/htdocs/index.html
cat > /etc/httpd.conf <<'CONF'
server "default" {
	listen on * port 80
	root "/htdocs"
}
CONF
rcctl enable httpd
rcctl restart httpd

# pf: call maint's anchor. The stock pf.conf has no `quick` pass rule for port 80, so the
# end of the file is early enough (see conf/pf.conf for placement).
grep -q '^anchor "maint"' /etc/pf.conf || echo 'anchor "maint"' >> /etc/pf.conf
pfctl -f /etc/pf.conf
pfctl -e 2>/dev/null || true	# already enabled on a stock install

# maint's config and its rc.d script.
mkdir -p /etc/maint
cat > /etc/maint/maint.toml <<'CONF'
[firewall]
backend = "pf"

[paths]
# OpenBSD's defaults, spelled out: the record in /var/db, the runtime files in /var/run.
state_dir = "/var/db/maint"
runtime_dir = "/var/run/maint"

[aliases]
office = ["192.168.56.32"]
CONF
install -m 0555 /maint/conf/maint.rc /etc/rc.d/maint
rcctl enable maint
rcctl restart maint
maint check
