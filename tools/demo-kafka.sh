#!/bin/sh
# make demo-kafka: the order saga demo (make demo) with its services as processes of their own,
# talking through a dev broker: esctl dev-broker (librdkafka's mock Kafka cluster) on 127.0.0.1.
#
# usage: sh tools/demo-kafka.sh [BUILD_DIR]      (default: $BUILD, else build/ of the checkout)
#
# Starts the broker, the three command processors and the saga coordinator in the background,
# each logging to a file in a temp dir; runs the driver in the foreground; then stops them all
# (SIGTERM, then waits), prints their logs with each line prefixed by who wrote it, and exits
# with the driver's status: 0 when every saga ended as the story says. A process that does not
# start is an exit 1 with its log shown.
set -u

root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-${BUILD:-$root/build}}
case $build in /*) ;; *) build=$root/$build ;; esac
demo=$build/examples/order_saga/order_saga
esctl=$build/tools/esctl/esctl
for exe in "$demo" "$esctl"; do
    if [ ! -x "$exe" ]; then
        echo "demo-kafka: $exe not found; build first (make build)" >&2
        exit 1
    fi
done

work=$(mktemp -d "${TMPDIR:-/tmp}/eskit-demo-kafka.XXXXXX") || exit 1
services="orders payments inventory saga"
broker_pid=
service_pids=

# Each process's log, every line prefixed with its name.
show_logs() {
    for name in "$@"; do
        [ -s "$work/$name.log" ] && sed "s/^/[$name] /" "$work/$name.log"
    done
}

stop() {
    for pid in "$@"; do kill -TERM "$pid" 2>/dev/null; done
    for pid in "$@"; do wait "$pid" 2>/dev/null; done
}

# On any exit: the services first (they leave their consumer groups), then the broker.
cleanup() {
    status=$?
    trap - EXIT INT TERM
    stop $service_pids
    stop $broker_pid
    echo
    echo "--- the services' output ---"
    show_logs $services
    [ "$status" -ne 0 ] && show_logs broker
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

fail() {
    echo "demo-kafka: $*" >&2
    exit 1
}

cat <<EOF
eskit demo-kafka: the order saga demo, each service a process of its own
  broker     esctl dev-broker --brokers 3          librdkafka's mock Kafka cluster, 127.0.0.1
  orders     order_saga --serve orders.order       command processor of orders.order
  payments   order_saga --serve payments.payment   command processor of payments.payment
  inventory  order_saga --serve inventory.item     command processor of inventory.item
  saga       order_saga --saga                     coordinator of the orders.fulfilment saga
  driver     order_saga --brokers ADDR             places the orders, waits until the log shows
                                                   every saga ended, then reports as make demo
A command processor is the single writer of its type: it consumes <type>.commands, decides,
appends to <type>.events and answers on <type>.replies. The coordinator sends its commands
the same way and logs each saga's transitions to orders.fulfilment.saga.events.
Logs and state files: $work (removed at the end)

EOF
cd "$work" || exit 1
"$esctl" dev-broker --brokers 3 --bootstrap-file "$work/bootstrap" \
    --plan orders.order --plan payments.payment --plan inventory.item \
    --plan orders.fulfilment.saga >"$work/broker.log" 2>&1 &
broker_pid=$!
tries=0
until [ -s "$work/bootstrap" ]; do
    kill -0 "$broker_pid" 2>/dev/null || { show_logs broker; fail "the dev broker did not start"; }
    tries=$((tries + 1))
    [ "$tries" -le 100 ] || fail "the dev broker wrote no bootstrap address within 10 s"
    sleep 0.1
done
brokers=$(cat "$work/bootstrap")
echo "broker: $brokers"

start() {
    name=$1
    shift
    "$demo" --brokers "$brokers" "$@" >"$work/$name.log" 2>&1 &
    service_pids="$service_pids $!"
    eval "pid_$name=$!"
}
start orders --serve orders.order --state "$work/orders.state.db"
start payments --serve payments.payment --state "$work/payments.state.db"
start inventory --serve inventory.item --state "$work/inventory.state.db"
start saga --saga --saga-db "$work/saga.db"

# Each says "ready" once it can take work (a processor: its partitions assigned and restored).
tries=0
for name in $services; do
    eval "pid=\$pid_$name"
    until grep -q ': ready' "$work/$name.log" 2>/dev/null; do
        kill -0 "$pid" 2>/dev/null || fail "$name exited before it was ready (its log is below)"
        tries=$((tries + 1))
        [ "$tries" -le 300 ] || fail "$name was not ready within 30 s (its log is below)"
        sleep 0.1
    done
    grep ': ready' "$work/$name.log" | sed "s/^/[$name] /"
done
echo

"$demo" --brokers "$brokers" --readmodel "$work/read.db"
exit $?
