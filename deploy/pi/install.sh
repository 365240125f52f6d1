#!/usr/bin/env bash
# Installs (or upgrades) the Ferry gateway on Raspberry Pi OS / Debian (arm64, armhf, amd64)
# from a release tarball made by deploy/pack.sh:
#   /opt/ferry/gateway        the program (replaced whole on upgrade)
#   /etc/ferry/gateway.yaml   config, written once and never overwritten (gateway.yaml.example is)
#   /etc/ferry/devices.passwd device accounts (scrypt hashes), created once; their passwords are printed then
#   /var/lib/ferry            outbox.db and deadletters.db, owned by the system user `ferry`
#   /etc/systemd/system/ferry-gateway.service
#
#   sudo deploy/pi/install.sh --tarball ferry-gateway-<version>-linux-<arch>.tar.gz [options]
#     --destdir DIR        install under DIR (also DESTDIR=DIR): no useradd, chown, apt-get or systemctl
#     --gateway-id ID      gatewayId for a new config (default: the host name)
#     --device ID          a device account to create (repeatable; its user name is the device id
#                          in its topics); a new devices.passwd without any gets one for `device-1`
#     --install-build-tools  apt-get install python3 make g++ if better-sqlite3 must be rebuilt
#     --no-start           do not enable or (re)start the service
#
# An upgrade stops the service, swaps the program directory, keeps config and data, and starts
# it again: the gateway migrates outbox.db itself (PRAGMA user_version) and keeps the backlog.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DESTDIR=${DESTDIR:-}
TARBALL=""
GATEWAY_ID=""
DEVICES=()
INSTALL_BUILD_TOOLS=0
START=1
PREFIX=/opt/ferry/gateway
CONF_DIR=/etc/ferry
DATA_DIR=/var/lib/ferry
UNIT_DIR=/etc/systemd/system
UNIT=ferry-gateway.service
SERVICE_USER=ferry
MIN_NODE_MAJOR=20

log() { echo "[ferry-install] $*"; }
die() { echo "[ferry-install] error: $*" >&2; exit 1; }

usage() {
  sed -n '/^#   sudo/,/^#     --no-start/p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

while [[ $# -gt 0 ]]; do
  case "$1" in
    --tarball) TARBALL=${2:?--tarball needs a file}; shift 2 ;;
    --destdir) DESTDIR=${2:?--destdir needs a directory}; shift 2 ;;
    --gateway-id) GATEWAY_ID=${2:?--gateway-id needs a value}; shift 2 ;;
    --device) DEVICES+=("${2:?--device needs a device id}"); shift 2 ;;
    --install-build-tools) INSTALL_BUILD_TOOLS=1; shift ;;
    --no-start) START=0; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
done

[[ -n "$TARBALL" ]] || die "--tarball is required (build one with deploy/pack.sh)"
[[ -f "$TARBALL" ]] || die "tarball $TARBALL not found"
if [[ -n "$DESTDIR" ]]; then
  DESTDIR=$(mkdir -p "$DESTDIR" && cd "$DESTDIR" && pwd)
  log "installing into $DESTDIR (system left alone: no user, no ownership, no systemctl)"
else
  [[ $(id -u) -eq 0 ]] || die "run as root (sudo), or pass --destdir to install into a directory"
fi

# --- prerequisites: Node 20+ on PATH (the unit runs it as /usr/bin/node) ---
NODE=$(command -v node || true)
[[ -n "$NODE" ]] || die "node is not installed: install Node.js $MIN_NODE_MAJOR (e.g. NodeSource's nodejs package), see docs/raspberry-pi.md"
NODE_MAJOR=$("$NODE" -p 'process.versions.node.split(".")[0]')
[[ "$NODE_MAJOR" -ge "$MIN_NODE_MAJOR" ]] || die "node $("$NODE" -v) is too old: Ferry needs Node.js $MIN_NODE_MAJOR or later"
log "node $("$NODE" -v) at $NODE ($("$NODE" -p 'process.arch'))"

# --- unpack into a fresh directory next to the installed one ---
TARGET="$DESTDIR$PREFIX"
NEW="$TARGET.new"
rm -rf "$NEW"
mkdir -p "$NEW"
# A failed install leaves the installed program as it was, and no half-unpacked copy.
trap 'rm -rf "$NEW"' EXIT
tar -xzf "$TARBALL" -C "$NEW" --strip-components=1 --no-same-owner
[[ -f "$NEW/bin/ferry.mjs" && -f "$NEW/dist/main.js" ]] || die "$TARBALL is not a Ferry release (no bin/ferry.mjs, dist/main.js)"
log "unpacked $(grep '^name=' "$NEW/RELEASE" 2>/dev/null | cut -d= -f2 || basename "$TARBALL")"

# --- better-sqlite3: the shipped binary fits the packing machine; rebuild it when it does not load here ---
BSQ=$(find "$NEW/node_modules/.pnpm" -maxdepth 3 -type d -path '*/better-sqlite3@*/node_modules/better-sqlite3' | head -n 1)
[[ -n "$BSQ" ]] || die "better-sqlite3 is missing from $TARBALL"
sqlite_loads() {
  "$NODE" -e 'const Database = require(process.argv[1]); new Database(":memory:").prepare("select 1").get();' "$BSQ" 2>/dev/null
}
if sqlite_loads; then
  log "better-sqlite3 loads as shipped"
else
  log "better-sqlite3 does not load on this machine ($("$NODE" -p 'process.arch'), ABI $("$NODE" -p 'process.versions.modules')): rebuilding it from source"
  missing=()
  for tool in python3 make g++; do command -v "$tool" >/dev/null || missing+=("$tool"); done
  if [[ ${#missing[@]} -gt 0 ]]; then
    if [[ $INSTALL_BUILD_TOOLS -eq 1 && -z "$DESTDIR" ]]; then
      log "installing build tools: apt-get install python3 make g++"
      DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 make g++
    else
      die "missing build tools: ${missing[*]}; run \`sudo apt-get install python3 make g++\` or pass --install-build-tools"
    fi
  fi
  GYP=$(dirname "$(readlink -f "$NODE")")/../lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js
  [[ -f "$GYP" ]] || GYP=$(command -v node-gyp || true)
  [[ -n "$GYP" && -e "$GYP" ]] || die "node-gyp not found (it ships with npm); install npm"
  # Node's own headers (NodeSource and Debian ship them under /usr/include/node) keep the build offline.
  NODEDIR=()
  if [[ -f /usr/include/node/node_api.h ]]; then NODEDIR=(--nodedir=/usr); fi
  (cd "$BSQ" && rm -rf build && "$NODE" "$GYP" rebuild --release "${NODEDIR[@]}" -j "$(nproc)")
  sqlite_loads || die "better-sqlite3 still does not load after the rebuild"
  log "better-sqlite3 rebuilt"
fi

# --- system user (not under DESTDIR) ---
if [[ -z "$DESTDIR" ]]; then
  if ! getent passwd "$SERVICE_USER" >/dev/null; then
    useradd --system --user-group --home-dir "$DATA_DIR" --no-create-home --shell /usr/sbin/nologin \
      --comment "Ferry gateway" "$SERVICE_USER"
    log "created system user $SERVICE_USER"
  fi
fi

# --- stop a running gateway before swapping its program (an upgrade) ---
SYSTEMD=0
if [[ -z "$DESTDIR" ]] && command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then SYSTEMD=1; fi
WAS_ACTIVE=0
if [[ $SYSTEMD -eq 1 ]] && systemctl is-active --quiet "$UNIT"; then
  WAS_ACTIVE=1
  log "stopping $UNIT for the upgrade"
  systemctl stop "$UNIT"
fi

if [[ -d "$TARGET" ]]; then
  rm -rf "$TARGET.old"
  mv "$TARGET" "$TARGET.old"
fi
mv "$NEW" "$TARGET"
trap - EXIT
rm -rf "$TARGET.old"
chmod -R u=rwX,go=rX "$TARGET"

# --- config: written once; the example is refreshed every time ---
install -d -m 0750 "$DESTDIR$CONF_DIR"
if [[ -z "$GATEWAY_ID" ]]; then
  GATEWAY_ID=$(hostname -s 2>/dev/null || echo ferry-gateway)
fi
GATEWAY_ID=$(printf '%s' "$GATEWAY_ID" | tr -c 'A-Za-z0-9._-' '-')
sed "s/@GATEWAY_ID@/$GATEWAY_ID/" "$HERE/gateway.yaml" > "$DESTDIR$CONF_DIR/gateway.yaml.example"
chmod 0644 "$DESTDIR$CONF_DIR/gateway.yaml.example"
if [[ -e "$DESTDIR$CONF_DIR/gateway.yaml" ]]; then
  log "keeping $CONF_DIR/gateway.yaml (see gateway.yaml.example for new settings)"
else
  install -m 0640 "$DESTDIR$CONF_DIR/gateway.yaml.example" "$DESTDIR$CONF_DIR/gateway.yaml"
  log "wrote $CONF_DIR/gateway.yaml with gatewayId $GATEWAY_ID: set uplink.url before starting"
fi

# --- device accounts: the listener takes devices on the LAN by login only (docs/raspberry-pi.md) ---
# Created when missing, never replaced: an upgrade adds only accounts named by --device that the
# file does not have yet. Passwords are shown once, here; the file keeps only scrypt hashes.
PASSWD_FILE="$CONF_DIR/devices.passwd"
FERRY=("$NODE" "$TARGET/bin/ferry.mjs")
NEW_PASSWD=0
if [[ ! -e "$DESTDIR$PASSWD_FILE" ]]; then
  NEW_PASSWD=1
  [[ ${#DEVICES[@]} -gt 0 ]] || DEVICES=(device-1)
fi
LISTED=""
if [[ $NEW_PASSWD -eq 0 && ${#DEVICES[@]} -gt 0 ]]; then
  LISTED=$("${FERRY[@]}" broker passwd list --file "$DESTDIR$PASSWD_FILE") || die "cannot read $PASSWD_FILE"
fi
CREATED=()
for device in "${DEVICES[@]}"; do
  [[ "$device" =~ ^[A-Za-z0-9._-]+$ ]] || die "--device $device: use letters, digits, '.', '_' and '-' (the id in the device's topics)"
  if grep -qxF -- "$device" <<<"$LISTED"; then
    log "keeping the account of device $device"
    continue
  fi
  password=$("$NODE" -p 'require("node:crypto").randomBytes(18).toString("base64url")')
  printf '%s\n' "$password" | "${FERRY[@]}" broker passwd add "$device" --file "$DESTDIR$PASSWD_FILE" >/dev/null 2>&1 \
    || die "could not write the account of device $device to $PASSWD_FILE"
  CREATED+=("$device $password")
done
if [[ -e "$DESTDIR$PASSWD_FILE" ]]; then
  chmod 0640 "$DESTDIR$PASSWD_FILE"
  if [[ -z "$DESTDIR" ]]; then chown root:"$SERVICE_USER" "$PASSWD_FILE"; fi
fi
if [[ ${#CREATED[@]} -gt 0 ]]; then
  log "device accounts written to $PASSWD_FILE; note the passwords now, they are not shown again:"
  for account in "${CREATED[@]}"; do
    log "  user ${account% *}  password ${account##* }"
  done
  log "more: echo '<password>' | ferry broker passwd add <deviceId> --file $PASSWD_FILE"
fi
# A config kept from before device logins listens on the LAN without them: the gateway refuses it.
if ! grep -Eq '^[[:space:]]+(passwordFile|allowAnonymous):' "$DESTDIR$CONF_DIR/gateway.yaml"; then
  log "warning: $CONF_DIR/gateway.yaml names no passwordFile: unless devices.listen has a username/password or listens on loopback only, the gateway refuses to start; add \`passwordFile: $PASSWD_FILE\` under devices.listen (see gateway.yaml.example)"
fi

# --- data dir: kept across upgrades and uninstalls ---
install -d -m 0750 "$DESTDIR$DATA_DIR"
if [[ -z "$DESTDIR" ]]; then
  chown root:"$SERVICE_USER" "$CONF_DIR" "$CONF_DIR/gateway.yaml"
  chown "$SERVICE_USER:$SERVICE_USER" "$DATA_DIR"
fi

# --- unit and the `ferry` command ---
install -d "$DESTDIR$UNIT_DIR"
if [[ "$NODE" == /usr/bin/node ]]; then
  install -m 0644 "$HERE/$UNIT" "$DESTDIR$UNIT_DIR/$UNIT"
else
  sed "s|^ExecStart=/usr/bin/node |ExecStart=$NODE |" "$HERE/$UNIT" > "$DESTDIR$UNIT_DIR/$UNIT"
  chmod 0644 "$DESTDIR$UNIT_DIR/$UNIT"
fi
install -d "$DESTDIR/usr/local/bin"
ln -sfn "$PREFIX/bin/ferry.mjs" "$DESTDIR/usr/local/bin/ferry"

if [[ $SYSTEMD -eq 1 ]]; then
  systemctl daemon-reload
  if [[ $START -eq 1 ]]; then
    systemctl enable "$UNIT"
    # A fresh config still names the example broker: starting would only retry it forever.
    CONFIGURED=1
    if grep -q 'broker.example.net' "$CONF_DIR/gateway.yaml"; then CONFIGURED=0; fi
    if [[ $WAS_ACTIVE -eq 1 || $CONFIGURED -eq 1 ]]; then
      systemctl restart "$UNIT"
      log "started $UNIT: journalctl -u ferry-gateway -f"
    else
      log "enabled $UNIT; edit $CONF_DIR/gateway.yaml (uplink.url), then: systemctl start ferry-gateway"
    fi
  fi
elif [[ -z "$DESTDIR" ]]; then
  log "systemd is not running here: start the gateway with $NODE $PREFIX/bin/ferry.mjs gateway --config $CONF_DIR/gateway.yaml"
fi
log "done"
