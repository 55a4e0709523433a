#!/bin/sh
# Provisions the Debian host: rust from rustup, maint built from /maint, an app
# on port 80 (python3's http.server), and maint's server as a systemd service.
set -eu
export DEBIAN_FRONTEND=noninteractive

apt-get update -q
# maint needs Rust 1.89+ (std's file locks); Debian 12's rustc is older, so use rustup.
apt-get install -y -q build-essential pkg-config libnftnl-dev libmnl-dev nftables \
    conntrack python3 curl
if ! command -v cargo >/dev/null; then
  curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
fi
. "$HOME/.cargo/env"

cd /maint
cargo build --release --locked -p maint
install -m 0755 target/release/maint /usr/local/bin/maint

# The app.
mkdir -p /srv/app
echo "the app" > /srv/app/index.html
cat > /etc/systemd/system/app.service <<'UNIT'
[Unit]
Description=stand-in app on port 80
[Service]
ExecStart=/usr/bin/python3 -m http.server 80 --directory /srv/app
[Install]
WantedBy=multi-user.target
UNIT

mkdir -p /etc/maint
cat > /etc/maint/maint.toml <<'CONF'
[firewall]
backend = "nftables"

[aliases]
office = ["192.168.56.32"]
CONF

if [ -f /maint/conf/maint.service ]; then
  install -m 0644 /maint/conf/maint.service /etc/systemd/system/maint.service
else
  cat > /etc/systemd/system/maint.service <<'UNIT'
[Unit]
Description=maint maintenance server
[Service]
ExecStart=/usr/local/bin/maint serve
ExecReload=/bin/kill -HUP $MAINPID
[Install]
WantedBy=multi-user.target
UNIT
fi
systemctl daemon-reload
systemctl enable --now app maint
maint check
