#!/usr/bin/env bash
# Installs only what is missing for `make bench` on Debian 12, as root: iperf3
# and the two reference VPNs of the tunnel benchmark (bench/tunnel.py):
#   openvpn                          OpenVPN 2.6 (user space; no DCO module here)
#   strongswan-charon                the IKE daemon, /usr/lib/ipsec/charon
#   strongswan-swanctl               swanctl, to load connections over vici
#   libcharon-extra-plugins          holds the kernel-libipsec plugin (user-space ESP)
#   libstrongswan-standard-plugins   holds the openssl and gcm plugins (AES-GCM)
# Quiet when everything is there.
set -euo pipefail

BENCH_PACKAGES=(
    iperf3 openvpn
    strongswan-charon strongswan-swanctl libcharon-extra-plugins libstrongswan-standard-plugins
)

missing=()
for pkg in "${BENCH_PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    [[ "$status" == "install ok installed" ]] || missing+=("$pkg")
done
((${#missing[@]})) || exit 0
if [[ $(id -u) -ne 0 ]]; then
    echo "bench-deps: P3-E900 need root to install: ${missing[*]}" >&2
    exit 1
fi
echo "bench-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
