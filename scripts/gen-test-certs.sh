#!/usr/bin/env bash
# Generates the PKI the tests use (issue 6): roots, an intermediate, node and workload
# certificates with SPIFFE IDs, and the bad ones the attack tests present. Test material only:
# keys are unencrypted and the good certificates live for 10 years so a build directory kept
# for days still works. Usage: scripts/gen-test-certs.sh OUT_DIR [TRUST_DOMAIN [NODE...]]
# (NODE...: the node credentials to make, default n1 n2; the lab passes its node names).
#
# OUT_DIR/
#   root.{crt,key}            trusted root CA ("meshd test root")
#   root2.{crt,key}           a second trusted root (root rotation: bundle.pem holds both)
#   intermediate.{crt,key}    CA signed by root; signs the workload and node certificates
#   bundle.pem                root.crt + root2.crt (the trust bundle)
#   other-root.{crt,key}      a CA nobody trusts ("another CA")
#   node-NODE                 node credentials (default node-n1, node-n2): URI SAN
#                             spiffe://TD/meshd/node/NODE
#   client, server            workloads spiffe://TD/ns/default/sa/{client,server}
#   server-root2              spiffe://TD/ns/default/sa/server, issued by root2 directly
#   other-ca                  spiffe://TD/ns/default/sa/client, issued by other-root
#   expired                   spiffe://TD/ns/default/sa/client, valid 2020-01-01..2020-01-02
#   not-yet-valid             spiffe://TD/ns/default/sa/client, valid from 2099-01-01
#   wrong-td                  spiffe://evil.example/ns/default/sa/client
#   no-spiffe                 no URI SAN (DNS SAN only)
#   two-uris                  two SPIFFE URI SANs (invalid per the SPIFFE X.509-SVID spec)
#   rsa1024                   spiffe://TD/ns/default/sa/client with a 1024-bit RSA key (weak)
# Each leaf X has X.crt (leaf), X.key and X.chain.pem (leaf + its intermediate if any).
set -euo pipefail

out=${1:?usage: gen-test-certs.sh OUT_DIR [TRUST_DOMAIN [NODE...]]}
td=${2:-cluster.local}
shift $(($# < 2 ? $# : 2))
nodes=("$@")
((${#nodes[@]})) || nodes=(n1 n2)
mkdir -p "$out"
cd "$out"
work=$(mktemp -d "${TMPDIR:-/tmp}/meshd-pki.XXXXXX")
trap 'rm -rf "$work"' EXIT

ec_key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

# A CA directory for `openssl ca` (it is the one openssl 3.0 command that sets arbitrary
# validity dates).
ca_conf() { # NAME
  local d=$work/$1
  mkdir -p "$d/new"
  : >"$d/index.txt"
  echo 1000 >"$d/serial"
  cat >"$d/ca.cnf" <<CNF
[ ca ]
default_ca = this
[ this ]
dir = $d
database = \$dir/index.txt
new_certs_dir = \$dir/new
serial = \$dir/serial
default_md = sha256
policy = any
unique_subject = no
copy_extensions = none
[ any ]
commonName = supplied
organizationName = optional
[ v3_ca ]
basicConstraints = critical, CA:true
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
[ v3_leaf ]
basicConstraints = critical, CA:false
keyUsage = critical, digitalSignature, keyEncipherment, keyAgreement
extendedKeyUsage = serverAuth, clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
subjectAltName = \${ENV::SAN}
CNF
}

selfsigned_root() { # NAME CN
  ec_key "$1.key"
  openssl req -new -x509 -key "$1.key" -subj "/O=meshd test/CN=$2" -days 3650 \
    -addext "basicConstraints=critical,CA:true" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$1.crt" 2>/dev/null
  ca_conf "$1"
}

# sign ISSUER NAME CN EXT SAN [START END] [keyfile-maker]
sign() {
  local issuer=$1 name=$2 cn=$3 ext=$4 san=$5 start=${6:-} end=${7:-}
  [[ -f $name.key ]] || ec_key "$name.key"
  openssl req -new -key "$name.key" -subj "/O=meshd test/CN=$cn" -out "$work/$name.csr" 2>/dev/null
  local dates=(-days 3650)
  [[ -n $start ]] && dates=(-startdate "$start" -enddate "$end")
  SAN=$san openssl ca -batch -config "$work/$issuer/ca.cnf" -cert "$issuer.crt" -keyfile "$issuer.key" \
    -extensions "$ext" "${dates[@]}" -notext -in "$work/$name.csr" -out "$name.crt" 2>/dev/null
}

leaf() { # ISSUER NAME SAN [START END]
  sign "$1" "$2" "$2" v3_leaf "$3" "${4:-}" "${5:-}"
  if [[ $1 == intermediate ]]; then cat "$2.crt" intermediate.crt >"$2.chain.pem"; else cp "$2.crt" "$2.chain.pem"; fi
}

selfsigned_root root "meshd test root"
selfsigned_root root2 "meshd test root 2"
selfsigned_root other-root "another CA"
cat root.crt root2.crt >bundle.pem

sign root intermediate "meshd test intermediate" v3_ca "DNS:intermediate.invalid"
ca_conf intermediate

spiffe="spiffe://$td"
for n in "${nodes[@]}"; do
  [[ $n =~ ^[A-Za-z0-9._-]+$ ]] || { echo "gen-test-certs.sh: bad node name '$n'" >&2; exit 2; }
  leaf intermediate "node-$n" "URI:$spiffe/meshd/node/$n"
done
leaf intermediate client "URI:$spiffe/ns/default/sa/client"
leaf intermediate server "URI:$spiffe/ns/default/sa/server"
leaf root2 server-root2 "URI:$spiffe/ns/default/sa/server"
leaf other-root other-ca "URI:$spiffe/ns/default/sa/client"
leaf intermediate expired "URI:$spiffe/ns/default/sa/client" 20200101000000Z 20200102000000Z
leaf intermediate not-yet-valid "URI:$spiffe/ns/default/sa/client" 20990101000000Z 21000101000000Z
leaf intermediate wrong-td "URI:spiffe://evil.example/ns/default/sa/client"
leaf intermediate no-spiffe "DNS:client.default.svc"
leaf intermediate two-uris "URI:$spiffe/ns/default/sa/client,URI:$spiffe/ns/default/sa/server"
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:1024 -out rsa1024.key 2>/dev/null
leaf intermediate rsa1024 "URI:$spiffe/ns/default/sa/client"

rm -f intermediate.csr
chmod 600 ./*.key
echo "$td" >trust-domain
touch stamp
