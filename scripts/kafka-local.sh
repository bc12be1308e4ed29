#!/usr/bin/env bash
# kafka-local.sh — run a real Apache Kafka (4.x, KRaft) broker or a small cluster on loopback,
# from the Maven Central jars, without Docker. See `kafka-local.sh --help`.
#
# Helper files live in scripts/kafka/: pom.xml (resolves the broker jars), log4j2-*.properties,
# Warmup.java (waits until the group and transaction coordinators answer).
# Jars are cached outside the work tree, in ${CHOREOGRAPH_CACHE:-$HOME/.cache/choreograph}.
set -euo pipefail

PROG=$(basename "$0")
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
HELPERS="$SCRIPT_DIR/kafka"

KAFKA_VERSION_FROM_ENV=${KAFKA_VERSION:+1}
KAFKA_VERSION=${KAFKA_VERSION:-4.3.1}
CACHE_ROOT=${CHOREOGRAPH_CACHE:-$HOME/.cache/choreograph}
DEFAULT_DIR="${TMPDIR:-/tmp}/choreograph-kafka"
HOST=127.0.0.1
START_TIMEOUT=${KAFKA_START_TIMEOUT:-120}
STOP_TIMEOUT=${KAFKA_STOP_TIMEOUT:-30}
READY_LINE='Kafka Server started'

usage() {
  cat <<EOF
Usage: $PROG <command> [args]

Runs Apache Kafka (KRaft, combined broker+controller nodes) on $HOST only, from the Maven
Central jars (no Docker). Progress and errors go to stderr; stdout carries only what a
command is asked for (addresses, status lines, logs).

Commands:
  fetch                 Download the broker jars (org.apache.kafka:kafka_2.13:\$KAFKA_VERSION plus
                        slf4j + log4j2) with Maven into \$CHOREOGRAPH_CACHE/kafka-<version>/libs.
                        Does nothing when that cache is complete. Prints the libs folder.
  start [DIR]           Fetch if needed, format storage (first time only), start \$NODES node(s) in
                        the background with data and logs in DIR, wait until every node logged
                        "$READY_LINE" and the group and transaction coordinators answer
                        (scripts/kafka/Warmup.java), then print the bootstrap address, e.g.
                        $HOST:9092 (3 nodes: $HOST:9092,$HOST:9094,$HOST:9096).
                        If every node of DIR is already running it prints the address and exits 0;
                        if only some are, it refuses (use start-node, or stop first).
                        A stopped cluster restarts on its existing data (no re-format).
  stop [DIR] [--clean]  Stop the node(s) of DIR by their recorded PIDs: SIGTERM, then SIGKILL after
                        \$KAFKA_STOP_TIMEOUT s. Keeps DIR unless --clean (or CLEAN=1), which deletes
                        it (only a DIR this script created). Exit 0 also when nothing was running.
  status [DIR]          One line per node: running/stopped, PID, address. Exit 0 if every node is
                        running, 1 if only some are, 3 if none is or DIR holds no cluster.
  bootstrap [DIR]       Print the bootstrap address of the cluster recorded in DIR (no check).
  kill DIR N            SIGKILL node N of DIR (by its recorded PID), for fault tests. Exit 0 if it
                        was not running.
  start-node DIR N      Start node N of DIR again on its existing data and wait until its log says
                        "$READY_LINE"; prints that node's address. Exit 0 if already running.
  logs [-f] [DIR] [N]   Print the last 100 lines of node N's server.log (default node 1); -f follows.
  help, -h, --help      This text.

DIR defaults to \${TMPDIR:-/tmp}/choreograph-kafka. Layout: DIR/cluster.env (nodes, port, cluster
id, version), DIR/node-N/{server.properties,kafka.pid,data/,logs/server.log,stdout.log},
DIR/warmup.log. NODES and KAFKA_PORT are recorded at the first start; later commands on DIR
use the recorded values (start refuses a different NODES/KAFKA_PORT once DIR holds data).

Environment:
  KAFKA_VERSION         Kafka version from Maven Central (default 4.3.1; 4.x needs Java 17+).
  CHOREOGRAPH_CACHE     Jar cache root (default \$HOME/.cache/choreograph).
  NODES                 Number of nodes for a new DIR (default 1). With 3: node.id 1..3, all voters,
                        replication factor 3 and min ISR 2 for default and internal topics
                        (with 1 node: 1 and 1; with 2: 2 and 1).
  KAFKA_PORT            Base port (default 9092): node i listens on KAFKA_PORT+2(i-1) (clients)
                        and KAFKA_PORT+2(i-1)+1 (controller).
  KAFKA_HEAP_OPTS       Broker heap flags (default -Xmx512m).
  KAFKA_JVM_PERFORMANCE_OPTS  GC flags (default Kafka's G1 flags).
  KAFKA_OPTS            Extra JVM flags for the brokers.
  KAFKA_EXTRA_PROPERTIES  Extra server.properties lines (newline-separated key=value), appended
                        to every node's generated config at each start (later keys win).
  KAFKA_START_TIMEOUT   Seconds start / start-node wait for readiness, warm-up included (default 120).
  KAFKA_STOP_TIMEOUT    Seconds stop waits after SIGTERM before SIGKILL (default 30).
  CLEAN=1               Same as stop --clean.
  JAVA_HOME / JAVA      Java to use (default: java on PATH). Must be a JDK 17+ (Warmup.java is run
                        as a single-file source program). Maven (mvn) is needed only for a fetch.

Broker settings for tests: auto.create.topics.enable=false (create topics with the admin API),
group.initial.rebalance.delay.ms=0, log.cleaner.dedupe.buffer.size=16 MiB,
initial.broker.registration.timeout.ms >= the start timeout.
EOF
}

info() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() { printf '%s: error: %s\n' "$PROG" "$*" >&2; exit 1; }

is_uint() { [[ ${1:-} =~ ^[0-9]+$ ]]; }

# ---------------------------------------------------------------------------------------------
# Java and jars

JAVA_BIN=""
find_java() {
  [[ -n $JAVA_BIN ]] && return 0
  local java="${JAVA:-}" ver major
  if [[ -z $java ]]; then
    if [[ -n ${JAVA_HOME:-} && -x ${JAVA_HOME}/bin/java ]]; then
      java="$JAVA_HOME/bin/java"
    else
      java=$(command -v java || true)
    fi
  fi
  [[ -n $java ]] || die "Java not found: Kafka $KAFKA_VERSION needs a JDK 17 or newer (install one, or set JAVA_HOME)"
  ver=$("$java" -version 2>&1 | awk -F'"' '/version/ { print $2; exit }') || true
  [[ -n $ver ]] || die "could not read the version of $java ('$java -version' printed no version)"
  major=${ver%%.*}
  [[ $major == 1 ]] && major=$(cut -d. -f2 <<<"$ver")   # 1.8.0_x -> 8
  major=${major%%[!0-9]*}                                  # 17-ea -> 17
  is_uint "$major" || die "could not parse the Java version '$ver' of $java"
  ((major >= 17)) || die "Java $ver ($java) is too old: Kafka $KAFKA_VERSION needs Java 17 or newer (set JAVA_HOME to a JDK 17+)"
  JAVA_BIN=$java
}

need_jdk() {
  find_java
  "$JAVA_BIN" --list-modules 2>/dev/null | grep -q '^jdk\.compiler@' ||
    die "$JAVA_BIN is a JRE without the jdk.compiler module: a JDK 17+ is needed to run scripts/kafka/Warmup.java"
}

kafka_home() { printf '%s/kafka-%s' "$CACHE_ROOT" "$KAFKA_VERSION"; }
libs_dir() { printf '%s/libs' "$(kafka_home)"; }
fetch_stamp() { printf '%s %s\n' "$KAFKA_VERSION" "$(cksum <"$HELPERS/pom.xml" | cut -d' ' -f1,2)"; }
fetch_complete() {
  local marker
  marker="$(kafka_home)/.complete"
  [[ -f $marker && -f "$(libs_dir)/kafka_2.13-$KAFKA_VERSION.jar" && "$(cat "$marker")" == "$(fetch_stamp)" ]]
}

ensure_fetched() {
  fetch_complete && return 0
  local home libs tmp
  home=$(kafka_home)
  libs=$(libs_dir)
  command -v mvn >/dev/null 2>&1 ||
    die "Maven (mvn) not found: it is needed once to download Kafka $KAFKA_VERSION into $libs (install Maven 3.6+)"
  mkdir -p "$home"
  # One fetch at a time per version; a concurrent caller waits, then finds the cache complete.
  local locked=0
  if command -v flock >/dev/null 2>&1; then
    exec 9>"$home/.lock"
    locked=1
    flock -w 900 9 || die "timed out waiting for another fetch holding $home/.lock"
    if fetch_complete; then
      exec 9>&-
      return 0
    fi
  fi
  tmp="$home/libs.partial"
  rm -rf "$tmp"
  info "fetching Apache Kafka $KAFKA_VERSION broker jars with Maven into $libs ..."
  local t0=$SECONDS
  # (Debian's Maven 3.8 prints stray colour resets even with -q -B: strip them.)
  if ! mvn -q -B -Dstyle.color=never -f "$HELPERS/pom.xml" dependency:copy-dependencies \
    -Dkafka.version="$KAFKA_VERSION" -DoutputDirectory="$tmp" 2>&1 </dev/null |
    sed -e $'s/\e\\[[0-9;]*m//g' -e '/^[[:space:]]*$/d' >&2; then
    rm -rf "$tmp"
    die "mvn could not resolve org.apache.kafka:kafka_2.13:$KAFKA_VERSION and its logging jars (see the Maven output above)"
  fi
  [[ -f "$tmp/kafka_2.13-$KAFKA_VERSION.jar" && -f "$tmp/kafka-clients-$KAFKA_VERSION.jar" ]] || {
    rm -rf "$tmp"
    die "Maven finished but kafka_2.13-$KAFKA_VERSION.jar / kafka-clients-$KAFKA_VERSION.jar are missing"
  }
  rm -rf "$libs" # never mix two versions or two dependency sets on one class path
  mv "$tmp" "$libs"
  fetch_stamp >"$home/.complete"
  ((locked)) && exec 9>&-
  info "fetched $(find "$libs" -name '*.jar' | wc -l | tr -d ' ') jars in $((SECONDS - t0)) s"
}

# ---------------------------------------------------------------------------------------------
# Cluster directory layout

DIR=""
C_NODES=""
C_PORT=""
C_CLUSTER_ID=""
C_VERSION=""

set_dir() { # set_dir <given-or-empty> <create: 0|1>
  local d=${1:-$DEFAULT_DIR}
  if [[ $2 == 1 ]]; then
    mkdir -p "$d" || die "cannot create $d"
  fi
  if [[ -d $d ]]; then
    DIR=$(cd "$d" && pwd -P)
  else
    case $d in /*) DIR=$d ;; *) DIR="$PWD/$d" ;; esac
  fi
}

node_dir() { printf '%s/node-%s' "$DIR" "$1"; }
broker_port() { echo $((C_PORT + 2 * ($1 - 1))); }
controller_port() { echo $((C_PORT + 2 * ($1 - 1) + 1)); }
node_addr() { printf '%s:%s' "$HOST" "$(broker_port "$1")"; }
bootstrap_list() {
  local i out=""
  for ((i = 1; i <= C_NODES; i++)); do out+="${out:+,}$(node_addr "$i")"; done
  printf '%s' "$out"
}

# Reads DIR/cluster.env into C_*; returns 1 if there is none.
read_layout() {
  local f="$DIR/cluster.env" k v
  [[ -f $f ]] || return 1
  while IFS='=' read -r k v; do
    case $k in
      NODES) C_NODES=$v ;;
      KAFKA_PORT) C_PORT=$v ;;
      CLUSTER_ID) C_CLUSTER_ID=$v ;;
      KAFKA_VERSION) C_VERSION=$v ;;
    esac
  done <"$f"
  is_uint "$C_NODES" && is_uint "$C_PORT" && [[ -n $C_CLUSTER_ID ]] && return 0
  die "$f is damaged (NODES='$C_NODES' KAFKA_PORT='$C_PORT' CLUSTER_ID='$C_CLUSTER_ID'); stop it and delete $DIR"
}

write_layout() {
  printf 'NODES=%s\nKAFKA_PORT=%s\nCLUSTER_ID=%s\nKAFKA_VERSION=%s\n' \
    "$C_NODES" "$C_PORT" "$C_CLUSTER_ID" "$KAFKA_VERSION" >"$DIR/cluster.env.tmp"
  mv "$DIR/cluster.env.tmp" "$DIR/cluster.env"
}

require_layout() {
  read_layout || die "no cluster recorded in $DIR (no $DIR/cluster.env): start one with '$PROG start $DIR'"
  # Operate a recorded cluster with the version it was started with, unless KAFKA_VERSION is set.
  if [[ -z $KAFKA_VERSION_FROM_ENV && -n $C_VERSION ]]; then KAFKA_VERSION=$C_VERSION; fi
}

any_formatted() {
  local i
  for ((i = 1; i <= C_NODES; i++)); do
    [[ -f "$(node_dir "$i")/data/meta.properties" ]] && return 0
  done
  return 1
}

new_cluster_id() {
  local id
  while :; do
    id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')
    [[ ${#id} == 22 && $id != -* ]] && break
  done
  printf '%s' "$id"
}

validate_shape() { # <nodes> <port>
  if ! { is_uint "$1" && (($1 >= 1 && $1 <= 9)); }; then die "NODES must be a number from 1 to 9 (got '$1')"; fi
  is_uint "$2" && (($2 >= 1024 && $2 + 2 * $1 - 1 <= 65535)) && return 0
  die "KAFKA_PORT must be a port from 1024 such that all $((2 * $1)) ports fit below 65536 (got '$2')"
}

# Layout for `start`: the recorded one, or a new one from NODES / KAFKA_PORT.
layout_for_start() {
  local want_nodes=${NODES:-} want_port=${KAFKA_PORT:-}
  if read_layout; then
    if [[ -z $KAFKA_VERSION_FROM_ENV && -n $C_VERSION ]]; then KAFKA_VERSION=$C_VERSION; fi
    if any_formatted; then
      if [[ -n $want_nodes && $want_nodes != "$C_NODES" ]]; then
        die "$DIR holds a $C_NODES-node cluster, but NODES=$want_nodes was asked: use another DIR, or '$PROG stop $DIR --clean' first"
      fi
      if [[ -n $want_port && $want_port != "$C_PORT" ]]; then
        die "$DIR holds a cluster on base port $C_PORT, but KAFKA_PORT=$want_port was asked: use another DIR, or '$PROG stop $DIR --clean' first"
      fi
      return 0
    fi
    # Recorded but never formatted (an earlier start failed early): take the new shape.
    C_NODES=${want_nodes:-$C_NODES}
    C_PORT=${want_port:-$C_PORT}
  else
    C_NODES=${want_nodes:-1}
    C_PORT=${want_port:-9092}
    C_CLUSTER_ID=$(new_cluster_id)
  fi
  validate_shape "$C_NODES" "$C_PORT"
}

# ---------------------------------------------------------------------------------------------
# Processes

proc_state() { # prints the process state letter (R, S, Z, ...) or fails
  local st
  if [[ -r /proc/$1/stat ]]; then
    st=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    st=${st##*) }
    printf '%s' "${st%% *}"
  else
    st=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
    printf '%s' "${st:0:1}"
  fi
}

proc_args() {
  if [[ -r /proc/$1/cmdline ]]; then
    tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null
  else
    ps -o args= -p "$1" 2>/dev/null
  fi
}

pid_alive() { # alive and not a zombie
  local st
  st=$(proc_state "$1") || return 1
  [[ -n $st && $st != Z && $st != X ]]
}

# Prints the PID of node N if the recorded process is alive and is that node's broker.
node_pid() {
  local nd pid args
  nd=$(node_dir "$1")
  [[ -f $nd/kafka.pid ]] || return 1
  pid=$(<"$nd/kafka.pid")
  is_uint "$pid" || return 1
  pid_alive "$pid" || return 1
  args=$(proc_args "$pid") || return 1
  [[ $args == *kafka.Kafka*"$nd/server.properties"* ]] || return 1
  printf '%s' "$pid"
}

# stop_nodes <timeout-s> <node>...: SIGTERM the running ones, wait, SIGKILL the rest.
stop_nodes() {
  local timeout=$1 i pid k end
  shift
  local -a pids=() names=()
  for i in "$@"; do
    if pid=$(node_pid "$i"); then
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid")
      names+=("$i")
      info "node $i: SIGTERM sent to pid $pid"
    fi
  done
  end=$((SECONDS + timeout))
  while any_alive "${pids[@]+"${pids[@]}"}" && ((SECONDS < end)); do sleep 0.2; done
  if any_alive "${pids[@]+"${pids[@]}"}"; then
    for k in "${!pids[@]}"; do
      if pid_alive "${pids[$k]}"; then
        info "node ${names[$k]}: still running after ${timeout} s, sending SIGKILL to pid ${pids[$k]}"
        kill -KILL "${pids[$k]}" 2>/dev/null || true
      fi
    done
    end=$((SECONDS + 10))
    while any_alive "${pids[@]}" && ((SECONDS < end)); do sleep 0.2; done
    any_alive "${pids[@]}" && die "could not stop pid(s) ${pids[*]}"
  fi
  for i in "$@"; do
    node_pid "$i" >/dev/null || rm -f "$(node_dir "$i")/kafka.pid"
  done
  return 0
}

any_alive() {
  local p
  for p in "$@"; do pid_alive "$p" && return 0; done
  return 1
}

port_in_use() {
  local p=$1
  if timeout 2 bash -c "exec 3<>/dev/tcp/$HOST/$p" 2>/dev/null; then
    return 0
  fi
  if command -v ss >/dev/null 2>&1; then
    ss -ltnH 2>/dev/null | awk -v p="$p" '{ n = split($4, a, ":"); if (a[n] == p) found = 1 } END { exit !found }' && return 0
  fi
  return 1
}

check_ports() { # <node>...
  local i p what busy=()
  for i in "$@"; do
    for what in broker controller; do
      if [[ $what == broker ]]; then p=$(broker_port "$i"); else p=$(controller_port "$i"); fi
      if port_in_use "$p"; then busy+=("$p (node $i $what listener)"); fi
    done
  done
  if ((${#busy[@]})); then
    local msg
    msg=$(printf '%s, ' "${busy[@]}")
    die "port(s) already in use on $HOST: ${msg%, }. Free them, or pick another base port with KAFKA_PORT (and another DIR)"
  fi
}

write_config() { # <node>
  local i=$1 nd voters="" j rf isr
  nd=$(node_dir "$i")
  for ((j = 1; j <= C_NODES; j++)); do voters+="${voters:+,}$j@$HOST:$(controller_port "$j")"; done
  rf=$((C_NODES < 3 ? C_NODES : 3))
  isr=$((rf == 1 ? 1 : rf - 1))
  local reg_ms=$((START_TIMEOUT * 1000 > 60000 ? START_TIMEOUT * 1000 : 60000))
  mkdir -p "$nd/data" "$nd/logs"
  {
    cat <<EOF
# Generated by scripts/kafka-local.sh at every start of this node: edits are overwritten.
process.roles=broker,controller
node.id=$i
controller.quorum.voters=$voters
listeners=PLAINTEXT://$HOST:$(broker_port "$i"),CONTROLLER://$HOST:$(controller_port "$i")
advertised.listeners=PLAINTEXT://$HOST:$(broker_port "$i")
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$nd/data

# Replication: $C_NODES node(s).
num.partitions=1
default.replication.factor=$rf
min.insync.replicas=$isr
offsets.topic.replication.factor=$rf
transaction.state.log.replication.factor=$rf
transaction.state.log.min.isr=$isr
share.coordinator.state.topic.replication.factor=$rf
share.coordinator.state.topic.min.isr=$isr

# Test broker.
auto.create.topics.enable=false
group.initial.rebalance.delay.ms=0
log.cleaner.dedupe.buffer.size=16777216
initial.broker.registration.timeout.ms=$reg_ms
EOF
    if [[ -n ${KAFKA_EXTRA_PROPERTIES:-} ]]; then
      printf '\n# From KAFKA_EXTRA_PROPERTIES.\n%s\n' "$KAFKA_EXTRA_PROPERTIES"
    fi
  } >"$nd/server.properties"
}

format_nodes() { # <node>...: formats those not formatted yet, in parallel
  local i nd
  local -a pids=() which=()
  for i in "$@"; do
    nd=$(node_dir "$i")
    [[ -f $nd/data/meta.properties ]] && continue
    info "node $i: formatting $nd/data (cluster id $C_CLUSTER_ID)"
    "$JAVA_BIN" -Xmx256m -Dlog4j2.configurationFile="$HELPERS/log4j2-tools.properties" \
      -cp "$(libs_dir)/*" kafka.tools.StorageTool format -t "$C_CLUSTER_ID" -c "$nd/server.properties" \
      >"$nd/format.log" 2>&1 </dev/null &
    pids+=("$!")
    which+=("$i")
  done
  local k failed=0
  for k in "${!pids[@]}"; do
    if ! wait "${pids[$k]}"; then
      i=${which[$k]}
      printf '%s: node %s: storage format failed:\n' "$PROG" "$i" >&2
      tail -n 30 "$(node_dir "$i")/format.log" >&2 || true
      failed=1
    fi
  done
  ((failed == 0)) || die "formatting storage failed"
}

declare -A LOG_OFFSET=()
STARTED=()
WARMUP_PID=""

launch_node() { # <node>
  local i=$1 nd log
  nd=$(node_dir "$i")
  log="$nd/logs/server.log"
  LOG_OFFSET[$i]=0
  [[ -f $log ]] && LOG_OFFSET[$i]=$(wc -c <"$log" | tr -d ' ')
  local -a heap perf extra
  read -r -a heap <<<"${KAFKA_HEAP_OPTS:--Xmx512m}"
  read -r -a perf <<<"${KAFKA_JVM_PERFORMANCE_OPTS:--XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent}"
  read -r -a extra <<<"${KAFKA_OPTS:-}"
  printf '\n=== %s: starting node %s (Kafka %s)\n' "$(date '+%F %T')" "$i" "$KAFKA_VERSION" >>"$nd/stdout.log"
  # Double fork: the broker is re-parented away from this shell, in its own session, immune to
  # SIGHUP; setsid does not fork here (the child is no process-group leader), so $! is java's PID.
  (
    cd "$nd"
    setsid nohup "$JAVA_BIN" "${heap[@]}" "${perf[@]}" -Djava.awt.headless=true "${extra[@]}" \
      -Dkafka.logs.dir="$nd/logs" -Dlog4j2.configurationFile="$HELPERS/log4j2-broker.properties" \
      -cp "$(libs_dir)/*" kafka.Kafka "$nd/server.properties" \
      >>"$nd/stdout.log" 2>&1 </dev/null &
    echo "$!" >"$nd/kafka.pid"
  )
  STARTED+=("$i")
  info "node $i: started pid $(<"$nd/kafka.pid") on $(node_addr "$i") (controller $HOST:$(controller_port "$i")), log $log"
}

log_says_started() { # <node>
  local log n off size
  log="$(node_dir "$1")/logs/server.log"
  [[ -f $log ]] || return 1
  off=${LOG_OFFSET[$1]:-0}
  size=$(wc -c <"$log" | tr -d ' ')
  ((size < off)) && off=0 # rolled over meanwhile
  n=$(tail -c +"$((off + 1))" "$log" | grep -c -F "$READY_LINE" || true)
  ((n > 0))
}

show_node_logs() { # <node>...
  local i nd
  for i in "$@"; do
    nd=$(node_dir "$i")
    if [[ -s $nd/logs/server.log ]]; then
      printf '%s: ---- node %s: last 30 lines of %s\n' "$PROG" "$i" "$nd/logs/server.log" >&2
      tail -n 30 "$nd/logs/server.log" >&2 || true
    fi
    if [[ -s $nd/stdout.log ]] && [[ $(grep -cv -e '^$' -e '^=== ' "$nd/stdout.log" || true) -gt 0 ]]; then
      printf '%s: ---- node %s: last 15 lines of %s (JVM output)\n' "$PROG" "$i" "$nd/stdout.log" >&2
      tail -n 15 "$nd/stdout.log" >&2 || true
    fi
  done
}

fail_start() { # <message> <nodes to show>...
  local msg=$1
  shift
  printf '%s: error: %s\n' "$PROG" "$msg" >&2
  show_node_logs "$@"
  if ((${#STARTED[@]})); then
    info "stopping what this command started (node(s) ${STARTED[*]})"
    stop_nodes 10 "${STARTED[@]}" || true
  fi
  exit 1
}

on_signal() {
  trap - INT TERM
  info "interrupted"
  if [[ -n $WARMUP_PID ]]; then kill -KILL "$WARMUP_PID" 2>/dev/null || true; fi
  if ((${#STARTED[@]})); then stop_nodes 10 "${STARTED[@]}" || true; fi
  exit 130
}

# wait_started <deadline> <node>...: until each node's log (since its launch) says READY_LINE.
wait_started() {
  local deadline=$1 i pid rec t0=$SECONDS
  shift
  local -a pending=("$@") still
  while ((${#pending[@]})); do
    still=()
    for i in "${pending[@]}"; do
      if ! pid=$(node_pid "$i"); then
        # Just launched, the process may not have exec'd java yet (its command line is still
        # the shell's, so node_pid does not recognise it): only a recorded process that is gone
        # has exited. (CI, 2026-11-25: a restarted node was declared dead this way, then found
        # running and stopped.)
        rec=$(cat "$(node_dir "$i")/kafka.pid" 2>/dev/null || true)
        if is_uint "$rec" && pid_alive "$rec"; then
          still+=("$i")
          continue
        fi
        fail_start "node $i exited during start-up (pid ${rec:-?})" "$i"
      fi
      if log_says_started "$i"; then
        info "node $i: '$READY_LINE' after $((SECONDS - t0)) s"
      else
        still+=("$i")
      fi
    done
    pending=("${still[@]+"${still[@]}"}")
    ((${#pending[@]})) || break
    if ((SECONDS >= deadline)); then
      fail_start "node(s) ${pending[*]} not ready within ${START_TIMEOUT}s (KAFKA_START_TIMEOUT)" "${pending[@]}"
    fi
    sleep 0.5
  done
}

# warmup <deadline> <node>...: runs Warmup.java while watching the nodes.
warmup() {
  local deadline=$1 left wpid rc i
  shift
  left=$((deadline - SECONDS))
  ((left >= 5)) || left=5
  info "warming up the group and transaction coordinators (scripts/kafka/Warmup.java, log $DIR/warmup.log)"
  "$JAVA_BIN" -Xmx256m -XX:TieredStopAtLevel=1 -Dlog4j2.configurationFile="$HELPERS/log4j2-tools.properties" \
    -cp "$(libs_dir)/*" "$HELPERS/Warmup.java" "$(bootstrap_list)" "$C_NODES" "$left" \
    >"$DIR/warmup.log" 2>&1 </dev/null &
  wpid=$!
  WARMUP_PID=$wpid
  while kill -0 "$wpid" 2>/dev/null; do
    for i in "$@"; do
      if ! node_pid "$i" >/dev/null; then
        kill -KILL "$wpid" 2>/dev/null || true
        wait "$wpid" 2>/dev/null || true
        fail_start "node $i exited during the warm-up" "$i"
      fi
    done
    if ((SECONDS > deadline + 30)); then
      kill -KILL "$wpid" 2>/dev/null || true
      wait "$wpid" 2>/dev/null || true
      fail_start "the warm-up did not finish in time" "$@"
    fi
    sleep 0.3
  done
  rc=0
  wait "$wpid" || rc=$?
  WARMUP_PID=""
  if ((rc != 0)); then
    printf '%s: ---- last 30 lines of %s\n' "$PROG" "$DIR/warmup.log" >&2
    tail -n 30 "$DIR/warmup.log" >&2 || true
    fail_start "the group/transaction coordinators did not answer within ${START_TIMEOUT}s (exit $rc)" "$@"
  fi
}

# ---------------------------------------------------------------------------------------------
# Commands

cmd_fetch() {
  (($# == 0)) || die "fetch takes no arguments"
  ensure_fetched
  libs_dir
  echo
}

cmd_start() {
  (($# <= 1)) || die "usage: $PROG start [DIR]"
  set_dir "${1:-}" 0 # created only once the checks passed
  layout_for_start
  local i running=() stopped=()
  for ((i = 1; i <= C_NODES; i++)); do
    if node_pid "$i" >/dev/null; then running+=("$i"); else stopped+=("$i"); fi
  done
  if ((${#stopped[@]} == 0)); then
    info "$DIR: all $C_NODES node(s) already running"
    bootstrap_list
    echo
    return 0
  fi
  if ((${#running[@]})); then
    die "$DIR: node(s) ${running[*]} running but node(s) ${stopped[*]} stopped: use '$PROG start-node $DIR N', or '$PROG stop $DIR' first"
  fi
  need_jdk
  ensure_fetched
  check_ports "${stopped[@]}"
  set_dir "$DIR" 1
  write_layout
  local t0=$SECONDS deadline=$((SECONDS + START_TIMEOUT))
  for i in "${stopped[@]}"; do write_config "$i"; done
  format_nodes "${stopped[@]}"
  trap on_signal INT TERM
  for i in "${stopped[@]}"; do launch_node "$i"; done
  wait_started "$deadline" "${stopped[@]}"
  local t1=$SECONDS
  warmup "$deadline" "${stopped[@]}"
  trap - INT TERM
  info "ready: $C_NODES node(s) in $((SECONDS - t0)) s (broker start $((t1 - t0)) s, warm-up $((SECONDS - t1)) s); data and logs in $DIR"
  bootstrap_list
  echo
}

cmd_stop() {
  local clean=${CLEAN:-0} given="" a
  for a in "$@"; do
    case $a in
      --clean) clean=1 ;;
      -*) die "stop: unknown option $a" ;;
      *) [[ -z $given ]] || die "usage: $PROG stop [DIR] [--clean]"; given=$a ;;
    esac
  done
  [[ $clean == 0 || $clean == 1 ]] || clean=1
  set_dir "$given" 0
  if [[ ! -d $DIR ]]; then
    info "$DIR does not exist: nothing to stop"
    return 0
  fi
  if ! read_layout; then
    info "no cluster recorded in $DIR: nothing to stop"
    if [[ $clean == 1 ]]; then
      info "not deleting $DIR: it was not created by $PROG (no cluster.env)"
    fi
    return 0
  fi
  local i nodes=()
  for ((i = 1; i <= C_NODES; i++)); do nodes+=("$i"); done
  local any=0
  for i in "${nodes[@]}"; do node_pid "$i" >/dev/null && any=1; done
  if ((any)); then
    local t0=$SECONDS
    stop_nodes "$STOP_TIMEOUT" "${nodes[@]}"
    info "stopped in $((SECONDS - t0)) s"
  else
    info "$DIR: no node running"
  fi
  if [[ $clean == 1 ]]; then
    rm -rf -- "$DIR"
    info "deleted $DIR"
  fi
}

cmd_status() {
  (($# <= 1)) || die "usage: $PROG status [DIR]"
  set_dir "${1:-}" 0
  if ! read_layout; then
    echo "no cluster in $DIR"
    return 3
  fi
  local i pid up=0
  for ((i = 1; i <= C_NODES; i++)); do
    if pid=$(node_pid "$i"); then
      up=$((up + 1))
      printf 'node %s: running  pid %-7s %s (controller %s:%s)\n' "$i" "$pid" "$(node_addr "$i")" "$HOST" "$(controller_port "$i")"
    else
      printf 'node %s: stopped  pid %-7s %s (controller %s:%s)\n' "$i" "-" "$(node_addr "$i")" "$HOST" "$(controller_port "$i")"
    fi
  done
  ((up == C_NODES)) && return 0
  ((up > 0)) && return 1
  return 3
}

cmd_bootstrap() {
  (($# <= 1)) || die "usage: $PROG bootstrap [DIR]"
  set_dir "${1:-}" 0
  require_layout
  bootstrap_list
  echo
}

node_arg() { # <N>: validates against the recorded layout
  is_uint "${1:-}" && (($1 >= 1 && $1 <= C_NODES)) && return 0
  die "node must be a number from 1 to $C_NODES (got '${1:-}')"
}

cmd_kill() {
  (($# == 2)) || die "usage: $PROG kill DIR N"
  set_dir "$1" 0
  require_layout
  node_arg "$2"
  local pid end
  if ! pid=$(node_pid "$2"); then
    info "node $2 of $DIR is not running"
    return 0
  fi
  kill -KILL "$pid" 2>/dev/null || true
  end=$((SECONDS + 10))
  while pid_alive "$pid"; do
    ((SECONDS < end)) || die "node $2 (pid $pid) survived SIGKILL for 10 s"
    sleep 0.1
  done
  rm -f "$(node_dir "$2")/kafka.pid"
  info "node $2 (pid $pid, $(node_addr "$2")) killed"
}

cmd_start_node() {
  (($# == 2)) || die "usage: $PROG start-node DIR N"
  set_dir "$1" 0
  require_layout
  node_arg "$2"
  local i=$2
  if node_pid "$i" >/dev/null; then
    info "node $i of $DIR is already running"
    node_addr "$i"
    echo
    return 0
  fi
  need_jdk
  ensure_fetched
  check_ports "$i"
  local t0=$SECONDS deadline=$((SECONDS + START_TIMEOUT))
  write_config "$i"
  format_nodes "$i"
  trap on_signal INT TERM
  launch_node "$i"
  wait_started "$deadline" "$i"
  trap - INT TERM
  info "node $i ready in $((SECONDS - t0)) s"
  node_addr "$i"
  echo
}

cmd_logs() {
  local follow=0 a
  local -a pos=()
  for a in "$@"; do
    case $a in
      -f | --follow) follow=1 ;;
      -*) die "logs: unknown option $a" ;;
      *) pos+=("$a") ;;
    esac
  done
  local given="" n=1
  case ${#pos[@]} in
    0) ;;
    1) if is_uint "${pos[0]}" && [[ ! -d ${pos[0]} ]]; then n=${pos[0]}; else given=${pos[0]}; fi ;;
    2) given=${pos[0]} n=${pos[1]} ;;
    *) die "usage: $PROG logs [-f] [DIR] [N]" ;;
  esac
  set_dir "$given" 0
  require_layout
  node_arg "$n"
  local log
  log="$(node_dir "$n")/logs/server.log"
  [[ -f $log ]] || die "no log yet at $log"
  if ((follow)); then
    exec tail -n 100 -F "$log"
  fi
  tail -n 100 "$log"
}

main() {
  local cmd=${1:-}
  (($#)) && shift
  if ! { is_uint "$START_TIMEOUT" && ((START_TIMEOUT > 0)); }; then die "KAFKA_START_TIMEOUT must be a positive number of seconds"; fi
  is_uint "$STOP_TIMEOUT" || die "KAFKA_STOP_TIMEOUT must be a number of seconds"
  case $cmd in
    fetch) cmd_fetch "$@" ;;
    start) cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    status) cmd_status "$@" ;;
    bootstrap) cmd_bootstrap "$@" ;;
    kill) cmd_kill "$@" ;;
    start-node) cmd_start_node "$@" ;;
    logs) cmd_logs "$@" ;;
    -h | --help | help | usage) usage ;;
    "") usage >&2; exit 2 ;;
    *) printf '%s: unknown command: %s\n\n' "$PROG" "$cmd" >&2; usage >&2; exit 2 ;;
  esac
}

main "$@"
