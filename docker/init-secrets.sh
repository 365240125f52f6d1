#!/bin/sh
# Creates what docker/compose.yaml needs before its first start, once (re-running keeps what exists):
#   tls/ca.crt, tls/ca.key        a private CA for this deployment (give ca.crt to every gateway: uplink.ca)
#   tls/broker.crt, broker.key    the broker's certificate for the names gateways dial, signed by that CA
#   secrets/ops-token             the bearer token for the services' /metrics and /healthz (Prometheus reads it)
#
#   sh docker/init-secrets.sh mqtt.example.com            # every name or IP gateways use for the broker
#   sh docker/init-secrets.sh --renew mqtt.example.com    # a new broker certificate from the same CA
#   sh docker/init-secrets.sh --out /srv/ferry mqtt.example.com
#
# Needs openssl. The services run as uid 1000 in their containers, so the keys and the token are
# made readable by that uid only (chown when run as root, otherwise the files are yours: run it as
# uid 1000 or as root). Keep tls/ca.key off the server if you can: it only signs new certificates.
set -eu

out=$(dirname "$0")
renew=0
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --renew) renew=1; shift ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    --*) echo "init-secrets: unknown option $1" >&2; exit 2 ;;
    *) break ;;
  esac
done
if [ $# -eq 0 ]; then
  echo "init-secrets: name the host gateways dial for the broker, e.g. sh docker/init-secrets.sh mqtt.example.com" >&2
  exit 2
fi
command -v openssl >/dev/null || { echo "init-secrets: openssl is needed (apt-get install openssl)" >&2; exit 1; }

umask 077
mkdir -p "$out/tls" "$out/secrets"
tls="$out/tls"
SERVICE_UID=1000

san=""
for name in "$@"; do
  case "$name" in
    *[!0-9.]*) case "$name" in *:*) entry="IP:$name" ;; *) entry="DNS:$name" ;; esac ;;
    *) entry="IP:$name" ;;
  esac
  san="${san:+$san,}$entry"
done

if [ ! -f "$tls/ca.key" ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -sha256 -days 3650 \
    -keyout "$tls/ca.key" -out "$tls/ca.crt" -subj "/CN=Ferry deployment CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  echo "created $tls/ca.crt (copy it to every gateway: uplink.ca)"
fi

if [ ! -f "$tls/broker.crt" ] || [ "$renew" = 1 ]; then
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -sha256 \
    -keyout "$tls/broker.key" -out "$tls/broker.csr" -subj "/CN=$1" 2>/dev/null
  ext="$tls/broker.ext"
  printf 'subjectAltName=%s\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' "$san" > "$ext"
  openssl x509 -req -in "$tls/broker.csr" -CA "$tls/ca.crt" -CAkey "$tls/ca.key" -CAcreateserial \
    -days 825 -sha256 -extfile "$ext" -out "$tls/broker.crt" 2>/dev/null
  rm -f "$tls/broker.csr" "$ext" "$tls/ca.srl"
  echo "created $tls/broker.crt for $san (valid 825 days; renew with --renew)"
fi

if [ ! -f "$out/secrets/ops-token" ]; then
  openssl rand -hex 32 > "$out/secrets/ops-token"
  echo "created $out/secrets/ops-token (FERRY_TOKEN for the CLI, the scrape token for Prometheus)"
fi

chmod 644 "$tls/ca.crt" "$tls/broker.crt"
chmod 600 "$tls/ca.key" "$tls/broker.key" "$out/secrets/ops-token"
chmod 755 "$tls" "$out/secrets"
if [ "$(id -u)" = 0 ]; then
  chown "$SERVICE_UID" "$tls/broker.key" "$out/secrets/ops-token"
elif [ "$(id -u)" != "$SERVICE_UID" ]; then
  echo "init-secrets: the containers run as uid $SERVICE_UID; run as root to hand it tls/broker.key and secrets/ops-token:" >&2
  echo "  sudo chown $SERVICE_UID $tls/broker.key $out/secrets/ops-token" >&2
fi
