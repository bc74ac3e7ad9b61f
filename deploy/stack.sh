#!/usr/bin/env bash
# The local stack on loopback: Apache Kafka (one KRaft node, broker and controller), Prometheus,
# Alertmanager, and a webhook receiver that records Alertmanager's notifications.
#
# Usage:
#   deploy/stack.sh up            start what is not running, wait until each part is ready,
#                                 create the topics rl.rollouts (4 partitions), rl.rollouts.dlq (1)
#   deploy/stack.sh down [--purge]  stop what this script started (TERM, then KILL after
#                                 STACK_STOP_TIMEOUT); --purge also deletes data and state
#   deploy/stack.sh status        print each part's state; exit 0 only if all are ready
#
# `up` on a running stack and `down` on a stopped one succeed without doing anything. `up`
# re-renders the configs from the templates and reloads a running Prometheus or Alertmanager
# whose config changed. A port already served by the right kind of server that this script did
# not start is used as it is ("external") and never stopped.
# Install the binaries, the Kafka jars and the venv first: deploy/install.sh (make install).
#
# Environment (defaults in brackets):
#   STACK_DIR              pid files, logs/, generated configs        [<repo>/.stack/run]
#   STACK_DATA_DIR         data: kafka/data, prometheus, alertmanager, webhook
#                          [<repo>/.stack; $STACK_DIR/data when STACK_DIR is set]
#   KAFKA_LIBS_DIR         broker jars from deploy/install.sh         [<repo>/.stack/kafka/libs]
#   KAFKA_PORT             Kafka PLAINTEXT listener                   [9092]
#   KAFKA_CONTROLLER_PORT  KRaft CONTROLLER listener                  [9097]
#   KAFKA_HEAP_OPTS        JVM heap flags of the broker               [-Xmx512m]
#   PROMETHEUS_PORT        Prometheus web/API                         [9090]
#   ALERTMANAGER_PORT      Alertmanager web/API                       [9093]
#   WEBHOOK_PORT           webhook receiver                           [9099]
#   DAEMON_PORT            rollout-monitor /metrics scraped by Prometheus  [9108]
#   DAEMON_PORT_2          a second rollout-monitor instance, also scraped [9109]
#   VENV_DIR               venv whose python creates the topics       [<repo>/.venv]
#   STACK_START_TIMEOUT    seconds each part may take to become ready [90]
#   STACK_STOP_TIMEOUT     seconds from TERM to KILL on down          [30]
#   JAVA, PROMETHEUS_BIN, ALERTMANAGER_BIN, KCAT  binaries  [java, prometheus,
#                          prometheus-alertmanager, kcat from PATH]
set -euo pipefail

REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ -n ${STACK_DIR:-} ]]; then
    STACK_DATA_DIR=${STACK_DATA_DIR:-$STACK_DIR/data}
else
    STACK_DIR=$REPO_DIR/.stack/run
    STACK_DATA_DIR=${STACK_DATA_DIR:-$REPO_DIR/.stack}
fi
mkdir -p "$STACK_DIR" "$STACK_DATA_DIR"
STACK_DIR=$(cd "$STACK_DIR" && pwd)
STACK_DATA_DIR=$(cd "$STACK_DATA_DIR" && pwd)
KAFKA_LIBS_DIR=${KAFKA_LIBS_DIR:-$REPO_DIR/.stack/kafka/libs}
KAFKA_PORT=${KAFKA_PORT:-9092}
KAFKA_CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-9097}
KAFKA_HEAP_OPTS=${KAFKA_HEAP_OPTS:--Xmx512m}
PROMETHEUS_PORT=${PROMETHEUS_PORT:-9090}
ALERTMANAGER_PORT=${ALERTMANAGER_PORT:-9093}
WEBHOOK_PORT=${WEBHOOK_PORT:-9099}
DAEMON_PORT=${DAEMON_PORT:-9108}
DAEMON_PORT_2=${DAEMON_PORT_2:-9109}
VENV_DIR=${VENV_DIR:-$REPO_DIR/.venv}
STACK_START_TIMEOUT=${STACK_START_TIMEOUT:-90}
STACK_STOP_TIMEOUT=${STACK_STOP_TIMEOUT:-30}
JAVA=${JAVA:-java}
PROMETHEUS_BIN=${PROMETHEUS_BIN:-prometheus}
ALERTMANAGER_BIN=${ALERTMANAGER_BIN:-prometheus-alertmanager}
KCAT=${KCAT:-kcat}

HOST=127.0.0.1
LOG_DIR=$STACK_DIR/logs
KAFKA_DATA_DIR=$STACK_DATA_DIR/kafka/data
PROMETHEUS_DATA_DIR=$STACK_DATA_DIR/prometheus
ALERTMANAGER_DATA_DIR=$STACK_DATA_DIR/alertmanager
WEBHOOK_FILE=$STACK_DATA_DIR/webhook/notifications.jsonl
TOPICS=(rl.rollouts:4 rl.rollouts.dlq:1)
COMPONENTS=(kafka prometheus alertmanager webhook)
# Variables a template may name as ${NAME}.
TEMPLATE_VARS=(REPO_DIR STACK_DIR KAFKA_PORT KAFKA_CONTROLLER_PORT KAFKA_DATA_DIR PROMETHEUS_PORT
    ALERTMANAGER_PORT WEBHOOK_PORT DAEMON_PORT DAEMON_PORT_2)

say() { printf 'stack: %s\n' "$*"; }
die() { printf 'stack: error: %s\n' "$*" >&2; exit 1; }

port_of() {
    case $1 in
        kafka) echo "$KAFKA_PORT" ;;
        prometheus) echo "$PROMETHEUS_PORT" ;;
        alertmanager) echo "$ALERTMANAGER_PORT" ;;
        webhook) echo "$WEBHOOK_PORT" ;;
    esac
}

# A string of the command line that tells our process from an unrelated one reusing its pid.
cmdline_mark_of() {
    case $1 in
        kafka) echo "$STACK_DIR/server.properties" ;;
        prometheus) echo "$STACK_DIR/prometheus.yml" ;;
        alertmanager) echo "$STACK_DIR/alertmanager.yml" ;;
        webhook) echo "$WEBHOOK_FILE" ;;
    esac
}

log_files_of() {
    case $1 in
        kafka) echo "$LOG_DIR/kafka.out $LOG_DIR/kafka-server.log" ;;
        *) echo "$LOG_DIR/$1.log" ;;
    esac
}

pid_file() { echo "$STACK_DIR/$1.pid"; }

now_ms() {
    local micros=${EPOCHREALTIME//[.,]/}
    echo $((micros / 1000))
}

# Pid of the component if this script started it and it still runs; fails otherwise.
running_pid() {
    local file pid cmdline
    file=$(pid_file "$1")
    [[ -f $file ]] || return 1
    pid=$(<"$file")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    # Empty for a zombie, which counts as stopped.
    cmdline=$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline") || return 1
    [[ $cmdline == *"$(cmdline_mark_of "$1")"* ]] || return 1
    echo "$pid"
}

port_open() {
    (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null
}

http_status() { # METHOD URL -> prints the status code, 000 when nothing answers
    python3 - "$1" "$2" <<'PY'
import sys, urllib.error, urllib.request
try:
    request = urllib.request.Request(sys.argv[2], method=sys.argv[1], data=b"" if sys.argv[1] == "POST" else None)
    with urllib.request.urlopen(request, timeout=3) as response:
        print(response.status)
except urllib.error.HTTPError as error:
    print(error.code)
except Exception:
    print("000")
PY
}

kafka_ready() {
    # A closed port fails at once; a metadata request to it would wait out its timeout.
    port_open "$KAFKA_PORT" || return 1
    if command -v "$KCAT" >/dev/null; then
        "$KCAT" -b "$HOST:$KAFKA_PORT" -L -m 2 -q >/dev/null 2>&1
    else
        "$VENV_DIR/bin/python" -c '
import sys
from confluent_kafka.admin import AdminClient
brokers = AdminClient({"bootstrap.servers": sys.argv[1]}).list_topics(timeout=2).brokers
sys.exit(0 if brokers else 1)' "$HOST:$KAFKA_PORT" >/dev/null 2>&1
    fi
}

ready() {
    case $1 in
        kafka) kafka_ready ;;
        *) [[ $(http_status GET "http://$HOST:$(port_of "$1")/-/ready") == 200 ]] ;;
    esac
}

show_logs() {
    local file
    for file in $(log_files_of "$1"); do
        [[ -s $file ]] || continue
        printf -- '--- last lines of %s ---\n' "$file" >&2
        tail -n 30 "$file" >&2
    done
}

# Substitute ${NAME} for each NAME of TEMPLATE_VARS (other ${...}, such as a relabel
# replacement's ${1}, stay as they are), refuse placeholders left unset, and write the result
# to OUT only when it differs. Succeeds with status 0 when OUT changed, 1 when it did not.
render() {
    local template=$1 out=$2 name value tmp
    local sed_args=()
    [[ -f $template ]] || die "template $template is missing"
    for name in "${TEMPLATE_VARS[@]}"; do
        value=${!name}
        value=${value//\\/\\\\}
        value=${value//|/\\|}
        value=${value//&/\\&}
        sed_args+=(-e "s|[\$][{]${name}[}]|${value}|g")
    done
    tmp=$out.tmp.$$
    sed "${sed_args[@]}" "$template" >"$tmp" || die "could not render $template into $out"
    if grep -nE '\$\{[A-Z][A-Z0-9_]*\}' "$tmp" >&2; then
        rm -f "$tmp"
        die "unknown placeholder(s) above left in $out, rendered from $template"
    fi
    if [[ -f $out ]] && cmp -s "$tmp" "$out"; then
        rm -f "$tmp"
        return 1
    fi
    mv "$tmp" "$out" || die "could not write $out"
}

# Start "$@" detached from this shell (own session, no terminal, no inherited lock fd) with its
# output in LOG, and record its pid.
launch() {
    local name=$1 log=$2
    shift 2
    local file
    file=$(pid_file "$name")
    rm -f "$file"
    # shellcheck disable=SC2016 # $$ and $@ belong to the inner shell
    setsid bash -c 'echo $$ >"$0"; exec "$@"' "$file" "$@" </dev/null >>"$log" 2>&1 9>&- &
    local waited=0
    until [[ -s $file ]]; do
        ((waited++ < 100)) || die "$name did not record its pid in $file"
        sleep 0.05
    done
}

wait_ready() {
    local name=$1 pid deadline
    deadline=$(($(now_ms) + STACK_START_TIMEOUT * 1000))
    until ready "$name"; do
        if ! pid=$(running_pid "$name"); then
            show_logs "$name"
            die "$name exited while starting (logs above)"
        fi
        if (($(now_ms) >= deadline)); then
            show_logs "$name"
            die "$name not ready on $HOST:$(port_of "$name") after ${STACK_START_TIMEOUT}s" \
                "(pid $pid; logs above)"
        fi
        sleep 0.2
    done
}

# Decide what `up` does for a component: prints "running", "external" or "start".
plan_start() {
    local name=$1 port
    port=$(port_of "$name")
    if running_pid "$name" >/dev/null; then
        echo running
    elif port_open "$port"; then
        ready "$name" || die "$HOST:$port is taken by something that is not $name;" \
            "free it or set $(tr '[:lower:]' '[:upper:]' <<<"$name")_PORT"
        echo external
    else
        echo start
    fi
}

require_binary() {
    command -v "$1" >/dev/null || die "$1 not found; run deploy/install.sh (make install)"
}

start_kafka() {
    require_binary "$JAVA"
    compgen -G "$KAFKA_LIBS_DIR/kafka_2.13-*.jar" >/dev/null ||
        die "no Kafka jars in $KAFKA_LIBS_DIR; run deploy/install.sh (make install)"
    port_open "$KAFKA_CONTROLLER_PORT" &&
        die "controller port $HOST:$KAFKA_CONTROLLER_PORT is taken; set KAFKA_CONTROLLER_PORT"
    local java_opts=()
    read -ra java_opts <<<"$KAFKA_HEAP_OPTS"
    java_opts+=("-Dlog4j2.configurationFile=$REPO_DIR/deploy/kafka/log4j2.properties"
        "-Dkafka.logs.dir=$LOG_DIR" -cp "$KAFKA_LIBS_DIR/*")
    # A --standalone format records the controller's address in the log; remember which.
    local format_stamp=$STACK_DATA_DIR/kafka/formatted-for
    local format_key="controller=$HOST:$KAFKA_CONTROLLER_PORT"
    if [[ ! -f $KAFKA_DATA_DIR/meta.properties ]]; then
        local cluster_id
        cluster_id=$("$JAVA" "${java_opts[@]}" kafka.tools.StorageTool random-uuid) ||
            die "kafka.tools.StorageTool random-uuid failed"
        say "kafka: formatting $KAFKA_DATA_DIR (cluster id $cluster_id)"
        mkdir -p "$KAFKA_DATA_DIR"
        "$JAVA" "${java_opts[@]}" kafka.tools.StorageTool format --standalone \
            -t "$cluster_id" -c "$STACK_DIR/server.properties" >>"$LOG_DIR/kafka.out" 2>&1 || {
            show_logs kafka
            die "formatting the Kafka log dir failed"
        }
        echo "$format_key" >"$format_stamp"
    elif [[ -f $format_stamp && $(<"$format_stamp") != "$format_key" ]]; then
        die "$KAFKA_DATA_DIR was formatted for $(<"$format_stamp"), not $format_key;" \
            "run deploy/stack.sh down --purge to start afresh"
    fi
    launch kafka "$LOG_DIR/kafka.out" "$JAVA" "${java_opts[@]}" kafka.Kafka "$STACK_DIR/server.properties"
}

start_prometheus() {
    require_binary "$PROMETHEUS_BIN"
    mkdir -p "$PROMETHEUS_DATA_DIR"
    launch prometheus "$LOG_DIR/prometheus.log" "$PROMETHEUS_BIN" \
        --config.file="$STACK_DIR/prometheus.yml" \
        --storage.tsdb.path="$PROMETHEUS_DATA_DIR" \
        --web.listen-address="$HOST:$PROMETHEUS_PORT" \
        --web.enable-lifecycle
}

start_alertmanager() {
    require_binary "$ALERTMANAGER_BIN"
    mkdir -p "$ALERTMANAGER_DATA_DIR"
    launch alertmanager "$LOG_DIR/alertmanager.log" "$ALERTMANAGER_BIN" \
        --config.file="$STACK_DIR/alertmanager.yml" \
        --storage.path="$ALERTMANAGER_DATA_DIR" \
        --web.listen-address="$HOST:$ALERTMANAGER_PORT" \
        --cluster.listen-address=
}

start_webhook() {
    require_binary python3
    launch webhook "$LOG_DIR/webhook.log" python3 "$REPO_DIR/deploy/webhook_receiver.py" \
        --host "$HOST" --port "$WEBHOOK_PORT" --file "$WEBHOOK_FILE"
}

# Render the configs; a running Prometheus or Alertmanager of ours reloads a changed one.
render_configs() {
    local changed=()
    render "$REPO_DIR/deploy/kafka/server.properties.template" "$STACK_DIR/server.properties" &&
        changed+=(kafka)
    render "$REPO_DIR/deploy/prometheus/prometheus.yml.template" "$STACK_DIR/prometheus.yml" &&
        changed+=(prometheus)
    render "$REPO_DIR/deploy/alertmanager/alertmanager.yml.template" "$STACK_DIR/alertmanager.yml" &&
        changed+=(alertmanager)
    local name
    for name in "${changed[@]}"; do
        running_pid "$name" >/dev/null || continue
        if [[ $name == kafka ]]; then
            say "kafka: server.properties changed; restart (down, up) to apply it"
        elif [[ $(http_status POST "http://$HOST:$(port_of "$name")/-/reload") == 200 ]]; then
            say "$name: config changed, reloaded"
        else
            show_logs "$name"
            die "$name rejected its new config $STACK_DIR/$name.yml (logs above)"
        fi
    done
}

create_topics() {
    [[ -x $VENV_DIR/bin/python ]] || die "no venv at $VENV_DIR; run deploy/install.sh (make install)"
    "$VENV_DIR/bin/python" "$REPO_DIR/deploy/kafka/create_topics.py" \
        --bootstrap "$HOST:$KAFKA_PORT" --timeout "$STACK_START_TIMEOUT" "${TOPICS[@]}" |
        sed 's/^/stack: kafka: /' ||
        die "could not create topics ${TOPICS[*]} on $HOST:$KAFKA_PORT"
}

cmd_up() {
    mkdir -p "$LOG_DIR" "$(dirname "$WEBHOOK_FILE")"
    render_configs
    local -A plan=()
    local name
    for name in "${COMPONENTS[@]}"; do
        plan[$name]=$(plan_start "$name")
    done
    # Start everything first and then wait, so the slow JVM start overlaps the others.
    for name in "${COMPONENTS[@]}"; do
        if [[ ${plan[$name]} == start ]]; then "start_$name"; fi
    done
    for name in "${COMPONENTS[@]}"; do
        wait_ready "$name"
        case ${plan[$name]} in
            start) say "$name: started, ready on $HOST:$(port_of "$name") (pid $(running_pid "$name"))" ;;
            running) say "$name: already running on $HOST:$(port_of "$name") (pid $(running_pid "$name"))" ;;
            external) say "$name: $HOST:$(port_of "$name") is served by a process this script did not start; using it" ;;
        esac
    done
    create_topics
}

# Signal the process group of a component: launch made each one a session (and group) leader,
# so helpers it forked go too.
signal_group() {
    kill "-$1" -- "-$2" 2>/dev/null || kill "-$1" "$2" 2>/dev/null || true
}

cmd_down() {
    local purge=false
    case ${1:-} in
        "") ;;
        --purge) purge=true ;;
        *) die "unknown option for down: $1" ;;
    esac
    local name pid deadline killed
    local -A stopping=()
    # TERM everything at once, then wait for each: Kafka's shutdown need not hold up the rest.
    for name in "${COMPONENTS[@]}"; do
        if pid=$(running_pid "$name"); then
            stopping[$name]=$pid
            signal_group TERM "$pid"
        fi
    done
    deadline=$(($(now_ms) + STACK_STOP_TIMEOUT * 1000))
    for name in "${COMPONENTS[@]}"; do
        pid=${stopping[$name]:-}
        if [[ -n $pid ]]; then
            killed=false
            while running_pid "$name" >/dev/null; do
                if ! $killed && (($(now_ms) >= deadline)); then
                    say "$name: still running ${STACK_STOP_TIMEOUT}s after TERM; sending KILL"
                    signal_group KILL "$pid"
                    killed=true
                elif (($(now_ms) >= deadline + 10000)); then
                    die "$name (pid $pid) survives KILL"
                fi
                sleep 0.2
            done
            say "$name: stopped (pid $pid)"
        fi
        rm -f "$(pid_file "$name")"
    done
    [[ ${#stopping[@]} -gt 0 ]] || say "nothing of $STACK_DIR was running"
    if $purge; then
        rm -rf "$KAFKA_DATA_DIR" "$STACK_DATA_DIR/kafka/formatted-for" \
            "$PROMETHEUS_DATA_DIR" "$ALERTMANAGER_DATA_DIR" \
            "$(dirname "$WEBHOOK_FILE")"
        rm -rf "${STACK_DIR:?}"/*.pid "${STACK_DIR:?}"/*.yml "$STACK_DIR/server.properties" "$LOG_DIR"
        say "purged data under $STACK_DATA_DIR and state under $STACK_DIR"
    fi
}

cmd_status() {
    local name pid state all_ready=0
    for name in "${COMPONENTS[@]}"; do
        if pid=$(running_pid "$name"); then
            if ready "$name"; then state="ready (pid $pid)"; else state="starting, not ready (pid $pid)"; all_ready=3; fi
        elif port_open "$(port_of "$name")" && ready "$name"; then
            state="ready (external: not started by this script)"
        else
            state="stopped"
            all_ready=3
        fi
        printf '%-13s %-22s %s\n' "$name" "$HOST:$(port_of "$name")" "$state"
    done
    printf '%-13s %s\n' "state" "$STACK_DIR (logs in $LOG_DIR)"
    return "$all_ready"
}

main() {
    local command=${1:-}
    [[ $# -gt 0 ]] && shift
    case $command in
        up | down)
            # One up/down at a time per state dir. Children close fd 9 (see launch).
            exec 9>"$STACK_DIR/.lock"
            flock -w "$((STACK_START_TIMEOUT * 2))" 9 || die "another stack.sh holds $STACK_DIR/.lock"
            "cmd_$command" "$@"
            ;;
        status) cmd_status ;;
        *)
            sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
            exit 2
            ;;
    esac
}

main "$@"
