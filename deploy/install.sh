#!/usr/bin/env bash
# Install what the local stack and the tests need, from the project's own files. Idempotent:
# each step checks first and does nothing when its result is already there.
#
#   1. Debian packages: prometheus (with promtool), prometheus-alertmanager (with amtool), kcat,
#      plus java, maven and python3-venv if those are missing. apt runs only when a binary is.
#   2. Kafka broker jars: resolved by Maven from deploy/kafka/pom.xml into KAFKA_LIBS_DIR,
#      only when that folder lacks the broker jar of the pom's version or was filled from
#      another version of the pom.
#   3. The project's virtualenv with `pip install -c constraints.txt -e '.[test,compile]'`
#      (the exact versions the tests pass with), created when missing and re-installed when
#      pyproject.toml or constraints.txt is newer than the stamp the last install left.
#   4. The detector library compiled with mypyc (deploy/compile_detectors.py), when a source
#      changed since the last build; gcc (Debian) when there is no C compiler.
#      ROLLOUT_MONITOR_PURE_PYTHON=1 skips it (the detectors then run as Python).
#
# Usage: deploy/install.sh
#
# Environment (defaults in brackets):
#   VENV_DIR        virtualenv of the project                    [<repo>/.venv]
#   PYTHON          interpreter that creates the virtualenv      [python3]
#   KAFKA_LIBS_DIR  broker jars, run by deploy/stack.sh          [<repo>/.stack/kafka/libs]
#   MVN             Maven                                        [mvn]
set -euo pipefail

REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV_DIR=${VENV_DIR:-$REPO_DIR/.venv}
PYTHON=${PYTHON:-python3}
KAFKA_LIBS_DIR=${KAFKA_LIBS_DIR:-$REPO_DIR/.stack/kafka/libs}
MVN=${MVN:-mvn}
POM=$REPO_DIR/deploy/kafka/pom.xml
VENV_STAMP=$VENV_DIR/.rollout-monitor-installed
LIBS_STAMP=$KAFKA_LIBS_DIR/.pom.sha256

say() { printf 'install: %s\n' "$*"; }
die() { printf 'install: error: %s\n' "$*" >&2; exit 1; }

as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo "$@"
    else
        die "need root (or sudo) to run: $*"
    fi
}

install_debian_packages() {
    local -A package_of=(
        [prometheus]=prometheus
        [promtool]=prometheus
        [prometheus-alertmanager]=prometheus-alertmanager
        [amtool]=prometheus-alertmanager
        [kcat]=kcat
        [java]=openjdk-17-jre-headless
        [mvn]=maven
        [cc]=gcc
    )
    local -A wanted=()
    local binary
    for binary in "${!package_of[@]}"; do
        command -v "$binary" >/dev/null || wanted[${package_of[$binary]}]=1
    done
    # Debian's python3 lacks venv/ensurepip unless python3-venv is installed.
    if ! "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then
        [[ -x $VENV_DIR/bin/python ]] || wanted[python3-venv]=1
    fi
    if [[ ${#wanted[@]} -eq 0 ]]; then
        say "Debian packages: present (prometheus, promtool, prometheus-alertmanager, amtool, kcat, gcc)"
        return
    fi
    local packages
    packages=$(printf '%s\n' "${!wanted[@]}" | sort | tr '\n' ' ')
    command -v apt-get >/dev/null || die "missing ${packages}and no apt-get to install them"
    say "Debian packages: installing ${packages}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
    # shellcheck disable=SC2086 # one word per package
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends $packages
    for binary in "${!package_of[@]}"; do
        command -v "$binary" >/dev/null || die "$binary still missing after apt-get install"
    done
}

pom_property() {
    sed -n "s:.*<$1>\\(.*\\)</$1>.*:\\1:p" "$POM" | head -n 1
}

kafka_libs_current() {
    local kafka_version log4j_version
    kafka_version=$(pom_property kafka.version)
    log4j_version=$(pom_property log4j.version)
    [[ -n $kafka_version ]] || die "no <kafka.version> in $POM"
    [[ -f $KAFKA_LIBS_DIR/kafka_2.13-$kafka_version.jar ]] || return 1
    [[ -f $KAFKA_LIBS_DIR/log4j-slf4j-impl-$log4j_version.jar ]] || return 1
    [[ -f $LIBS_STAMP ]] && [[ $(cat "$LIBS_STAMP") == "$(sha256sum <"$POM" | cut -d' ' -f1)" ]]
}

# Maven resolves into a fresh folder; the libs folder then gains the jars it lacks and loses the
# ones the pom no longer names. Jars present in both are left untouched, so a broker already
# running from the libs folder keeps reading the files it opened.
fetch_kafka_libs() {
    if kafka_libs_current; then
        say "Kafka jars: present in $KAFKA_LIBS_DIR (kafka_2.13 $(pom_property kafka.version))"
        return
    fi
    command -v "$MVN" >/dev/null || die "Maven ($MVN) not found"
    local fresh=$KAFKA_LIBS_DIR.fetch.$$
    rm -rf "$fresh"
    mkdir -p "$fresh" "$KAFKA_LIBS_DIR"
    say "Kafka jars: resolving deploy/kafka/pom.xml with Maven into $KAFKA_LIBS_DIR"
    local mvn_log=$fresh.log
    if ! "$MVN" -q -B -f "$POM" dependency:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$fresh" >"$mvn_log" 2>&1; then
        cat "$mvn_log" >&2
        rm -rf "$fresh" "$mvn_log"
        die "Maven could not resolve the Kafka jars (its output is above)"
    fi
    rm -f "$mvn_log"
    local -A fetched=()
    local jar name added=0 removed=0
    for jar in "$fresh"/*.jar; do
        name=${jar##*/}
        fetched[$name]=1
        if [[ ! -e $KAFKA_LIBS_DIR/$name ]]; then
            mv "$jar" "$KAFKA_LIBS_DIR/"
            added=$((added + 1))
        fi
    done
    for jar in "$KAFKA_LIBS_DIR"/*.jar; do
        name=${jar##*/}
        if [[ -z ${fetched[$name]:-} ]]; then
            rm -f "$jar"
            removed=$((removed + 1))
        fi
    done
    rm -rf "$fresh"
    sha256sum <"$POM" | cut -d' ' -f1 >"$LIBS_STAMP"
    kafka_libs_current || die "Kafka jars incomplete in $KAFKA_LIBS_DIR after Maven ran"
    say "Kafka jars: ${#fetched[@]} jars ($added added, $removed removed)"
}

install_venv() {
    if [[ ! -x $VENV_DIR/bin/python ]]; then
        command -v "$PYTHON" >/dev/null || die "$PYTHON not found"
        "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
            die "$PYTHON is older than 3.11, which pyproject.toml requires"
        say "virtualenv: creating $VENV_DIR"
        "$PYTHON" -m venv "$VENV_DIR"
    fi
    if [[ -f $VENV_STAMP && ! $REPO_DIR/pyproject.toml -nt $VENV_STAMP &&
        ! $REPO_DIR/constraints.txt -nt $VENV_STAMP ]]; then
        say "virtualenv: up to date ($VENV_DIR)"
        return
    fi
    say "virtualenv: pip install -c constraints.txt -e '.[test,compile]' into $VENV_DIR"
    "$VENV_DIR/bin/python" -m pip install -q --disable-pip-version-check \
        -c "$REPO_DIR/constraints.txt" -e "${REPO_DIR}[test,compile]" ||
        die "pip install failed (see its output above)"
    touch "$VENV_STAMP"
}

compile_detectors() {
    if [[ ${ROLLOUT_MONITOR_PURE_PYTHON:-} == 1 ]]; then
        say "detectors: not compiled (ROLLOUT_MONITOR_PURE_PYTHON=1)"
        return
    fi
    "$VENV_DIR/bin/python" -c 'import sysconfig, os, sys
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' ||
        die "the Python headers (Python.h) are missing: install python3-dev, or set ROLLOUT_MONITOR_PURE_PYTHON=1"
    "$VENV_DIR/bin/python" "$REPO_DIR/deploy/compile_detectors.py" | sed 's/^/install: /' ||
        die "compiling the detectors failed (see above); ROLLOUT_MONITOR_PURE_PYTHON=1 skips it"
}

install_debian_packages
fetch_kafka_libs
install_venv
compile_detectors
say "done"
