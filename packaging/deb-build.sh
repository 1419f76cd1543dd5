#!/usr/bin/env bash
# The Debian package build of p3hw (docs/install.md), in three steps:
#   deb-build.sh changelog        debian/changelog for the version (make deb runs it first)
#   deb-build.sh build            (debian/rules) the cffi extension and libp3dpdk.so for Debian's
#                                 python3, the vendored wheels, in debian/build/
#   deb-build.sh install DESTDIR  (debian/rules) the private layout under DESTDIR
# The version has one source: p3hw.version_from_git() (git describe), unless P3HW_VERSION is set
# (rebuilding a given version). It goes into debian/changelog and p3hw/_version.py of the package.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=/usr/bin/python3
OUT=debian/build
LIBDIR=/usr/lib/p3hw

version() {
    if [[ -n ${P3HW_VERSION:-} ]]; then
        echo "$P3HW_VERSION"
    else
        "$PY" -c 'import sys; sys.path.insert(0, "."); import p3hw; print(p3hw.version_from_git("."))'
    fi
}

changelog() {
    local v
    v=$(version)
    if [[ -z $v || $v == None ]]; then
        echo "deb-build: P3-E125 no version: not a git checkout and P3HW_VERSION is not set" >&2
        exit 1
    fi
    cat >debian/changelog <<CHANGES
p3hw ($v) bookworm; urgency=medium

  * Built from git $(git rev-parse --short=10 HEAD 2>/dev/null || echo unknown) (p3hw.version_from_git).

 -- p3hw maintainers <maintainers@users.noreply.r-seed-83907238.example>  $(date -R)
CHANGES
    echo "$v"
}

vendor() {
    # Each pinned wheel: from build/deb-vendor/ when there, else downloaded once; checked; unpacked.
    mkdir -p build/deb-vendor "$OUT/vendor"
    grep -v '^#' packaging/vendor.txt | while read -r wheel sha; do
        [[ -n $wheel ]] || continue
        if [[ ! -f build/deb-vendor/$wheel ]]; then
            local name=${wheel%%-*} rest=${wheel#*-}
            "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.11 \
                --platform manylinux2014_x86_64 -d build/deb-vendor "${name//_/-}==${rest%%-*}"
        fi
        echo "$sha  build/deb-vendor/$wheel" | sha256sum --quiet -c - || {
            echo "deb-build: P3-E125 build/deb-vendor/$wheel does not match its sha256 in packaging/vendor.txt" >&2
            exit 1
        }
        "$PY" -m zipfile -e "build/deb-vendor/$wheel" "$OUT/vendor"
    done
    rm -rf "$OUT"/vendor/*.dist-info/RECORD
}

build() {
    mkdir -p "$OUT"
    vendor
    # The extension, for /usr/bin/python3 (not the checkout's .venv).
    "$PY" setup.py -q build_ext --build-lib "$OUT/lib" --build-temp "$OUT/tmp" >"$OUT/build_ext.log" 2>&1 ||
        { cat "$OUT/build_ext.log" >&2; exit 1; }
    # libp3dpdk.so, into debian/build instead of the checkout's build/.
    make -s -C native dpdk DPDK_LIB="$PWD/$OUT/libp3dpdk.so"
}

install_tree() {
    local dest=$1 v py
    v=$(sed -n '1s/^p3hw (\([^)]*\)).*/\1/p' debian/changelog)
    py=$dest$LIBDIR/python
    mkdir -p "$py" "$dest$LIBDIR/vendor" "$dest/usr/bin" "$dest/lib/systemd/system" "$dest/etc/p3hw" \
        "$dest/usr/share/doc/p3hw" "$dest/usr/share/man/man1"
    # p3hw, with backends/ and simulators/ as p3hw.backends and p3hw.simulators (setup.py).
    for pair in p3hw:p3hw backends:p3hw/backends simulators:p3hw/simulators; do
        (cd "${pair%%:*}" && find . -name '*.py' -not -path '*/__pycache__/*' -print0) |
            while IFS= read -r -d '' f; do
                install -D -m 0644 "${pair%%:*}/$f" "$py/${pair#*:}/$f"
            done
    done
    rm -f "$py/p3hw/_version.py"
    printf '"""Written by the package build (packaging/deb-build.sh)."""\n\nVERSION = "%s"\nLIBDIR = "%s"\n' \
        "$v" "$LIBDIR" >"$py/p3hw/_version.py"
    install -m 0644 "$OUT"/lib/p3hw/_dataplane.*.so "$py/p3hw/"
    [[ ! -f $OUT/libp3dpdk.so ]] || install -m 0644 "$OUT/libp3dpdk.so" "$dest$LIBDIR/"
    cp -r "$OUT"/vendor/. "$dest$LIBDIR/vendor/"
    find "$dest$LIBDIR/vendor" -type f -exec chmod 0644 {} +
    for cmd in p3hw:p3hw.cli p3ctl:p3hw.admin.p3ctl; do
        cat >"$dest/usr/bin/${cmd%%:*}" <<SCRIPT
#!/usr/bin/python3
# p3hw's private modules and its vendored dependencies are under $LIBDIR (docs/install.md).
import sys

sys.path[0:0] = ["$LIBDIR/python"]
sys.path.append("$LIBDIR/vendor")
from ${cmd#*:} import main

sys.exit(main())
SCRIPT
        chmod 0755 "$dest/usr/bin/${cmd%%:*}"
    done
    for unit in packaging/p3hw-*.service; do
        sed 's#/usr/local/bin/p3hw#/usr/bin/p3hw#g' "$unit" >"$dest/lib/systemd/system/$(basename "$unit")"
    done
    for conf in examples/*.conf; do
        install -m 0644 "$conf" "$dest/etc/p3hw/$(basename "$conf" .conf).conf.example"
    done
    install -m 0644 README.md docs/install.md "$dest/usr/share/doc/p3hw/"
    install -m 0644 packaging/p3hw.1 packaging/p3ctl.1 "$dest/usr/share/man/man1/"
}

case ${1:-} in
    changelog) changelog ;;
    build) build ;;
    install) install_tree "${2:?DESTDIR}" ;;
    version) version ;;
    *) echo "usage: $0 changelog|build|install DESTDIR|version" >&2; exit 2 ;;
esac
