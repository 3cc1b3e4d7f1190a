#!/usr/bin/env bash
# Secrets for components/tls-auth on a kind cluster: a throwaway CA, a server certificate for the
# headless Service's names (also usable as a client certificate, for the pod's own probes), a client
# certificate for scanners, and one random bearer token. Writes them to OUT (default build/kind-secrets)
# and, unless NO_APPLY=1, creates the Secrets in the photodedup namespace. Never commit OUT.
set -euo pipefail
OUT=${1:-build/kind-secrets}
mkdir -p "$OUT" && cd "$OUT"
umask 077
openssl req -x509 -newkey rsa:3072 -nodes -days 30 -subj /CN=photodedup-kind-ca -keyout ca.key -out ca.crt 2>/dev/null
issue() {  # issue NAME SUBJECT EXTENSIONS
  openssl req -newkey rsa:3072 -nodes -subj "$2" -keyout "$1.key" -out "$1.csr" 2>/dev/null
  openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 -out "$1.crt" \
    -extfile <(printf '%s\n' "$3") 2>/dev/null
  rm "$1.csr"
}
issue tls /CN=photodedup "subjectAltName=DNS:photodedup.photodedup.svc,DNS:*.photodedup.photodedup.svc,DNS:photodedup.photodedup.svc.cluster.local,DNS:localhost,IP:127.0.0.1
extendedKeyUsage=serverAuth,clientAuth"
issue client /CN=photodedup-scanner "extendedKeyUsage=clientAuth"
head -c 32 /dev/urandom | base64 | tr -d '=+/' >tokens
echo "wrote $OUT: ca.crt tls.crt/key (server) client.crt/key (scanner) tokens"
if [ -z "${NO_APPLY:-}" ]; then
  kubectl -n photodedup create secret generic photodedup-tls --type kubernetes.io/tls \
    --from-file=tls.crt --from-file=tls.key --from-file=ca.crt --dry-run=client -o yaml | kubectl apply -f -
  kubectl -n photodedup create secret generic photodedup-tokens --from-file=tokens \
    --dry-run=client -o yaml | kubectl apply -f -
fi
