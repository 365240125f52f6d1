#!/usr/bin/env bash
# Removes the Ferry gateway installed by install.sh. The outbox (/var/lib/ferry) and the config
# (/etc/ferry) stay, so a reinstall resumes the backlog; --purge deletes them and the user too.
#
#   sudo deploy/pi/uninstall.sh [--purge] [--destdir DIR]
set -euo pipefail

DESTDIR=${DESTDIR:-}
PURGE=0
PREFIX=/opt/ferry/gateway
CONF_DIR=/etc/ferry
DATA_DIR=/var/lib/ferry
UNIT=ferry-gateway.service
SERVICE_USER=ferry

log() { echo "[ferry-uninstall] $*"; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --purge) PURGE=1; shift ;;
    --destdir) DESTDIR=${2:?--destdir needs a directory}; shift 2 ;;
    -h | --help) echo "usage: uninstall.sh [--purge] [--destdir DIR]"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
if [[ -z "$DESTDIR" && $(id -u) -ne 0 ]]; then
  echo "[ferry-uninstall] error: run as root (sudo), or pass --destdir" >&2
  exit 1
fi

if [[ -z "$DESTDIR" ]] && command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
  systemctl disable --now "$UNIT" 2>/dev/null || true
fi
rm -f "$DESTDIR/etc/systemd/system/$UNIT"
if [[ -z "$DESTDIR" ]] && command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
  systemctl daemon-reload
fi
if [[ "$(readlink "$DESTDIR/usr/local/bin/ferry" 2>/dev/null || true)" == "$PREFIX/bin/ferry.mjs" ]]; then
  rm -f "$DESTDIR/usr/local/bin/ferry"
fi
rm -rf "$DESTDIR$PREFIX" "$DESTDIR$PREFIX.new" "$DESTDIR$PREFIX.old"
rmdir "$DESTDIR/opt/ferry" 2>/dev/null || true
log "removed the program and the unit"

if [[ $PURGE -eq 1 ]]; then
  rm -rf "$DESTDIR$DATA_DIR" "$DESTDIR$CONF_DIR"
  if [[ -z "$DESTDIR" ]] && getent passwd "$SERVICE_USER" >/dev/null; then
    userdel "$SERVICE_USER"
  fi
  log "purged $DATA_DIR, $CONF_DIR and the user $SERVICE_USER"
else
  log "kept $DATA_DIR (the outbox backlog) and $CONF_DIR; --purge removes them"
fi
