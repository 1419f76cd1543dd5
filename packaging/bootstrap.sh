#!/usr/bin/env bash
# Installs only what is missing for building, testing and running p3hw on
# Debian 12, as root: Debian packages, the virtual environment in .venv, the
# editable install with its native extension. Idempotent and quiet when all
# is there. Called by `make bootstrap` (and so by `make test` / `make demo`).
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
    build-essential pkg-config libssl-dev openssl python3-venv python3-dev
    libp11-kit-dev
    softhsm2 libsofthsm2 opensc
    libdpdk-dev dpdk
    iproute2 iputils-ping iperf3 tshark ethtool
    # tests/e2e/test_strongswan_interop.py: an independent IKEv2 peer (user-space ESP, AES-GCM)
    strongswan-charon strongswan-swanctl libcharon-extra-plugins libstrongswan-standard-plugins
    # make deb and its test (docs/install.md): the package build, lintian, the signed repository, the test root
    debhelper dh-python lintian python3-all-dev python3-cffi python3-setuptools python3-pip
    reprepro gnupg mmdebstrap
)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    [[ "$status" == "install ok installed" ]] || missing+=("$pkg")
done
if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "bootstrap: P3-E900 need root to install: ${missing[*]}" >&2
        exit 1
    fi
    echo "bootstrap: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
    echo "bootstrap: creating .venv"
    "$PYTHON" -m venv .venv
fi

# Reinstall when the project metadata changed since the last install.
stamp=.venv/.p3hw-installed
if [[ ! -f $stamp || pyproject.toml -nt $stamp || setup.py -nt $stamp ]]; then
    echo "bootstrap: installing p3hw (editable) and its test tools into .venv"
    mkdir -p build
    if ! { .venv/bin/python -m pip install -q --upgrade pip &&
           .venv/bin/python -m pip install -q -e '.[test]'; } >build/bootstrap-pip.log 2>&1; then
        cat build/bootstrap-pip.log >&2
        echo "bootstrap: pip install failed (log above)" >&2
        exit 1
    fi
    touch "$stamp"
fi
