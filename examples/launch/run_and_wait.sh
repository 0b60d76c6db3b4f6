# Sourced by the launch scripts: `run_and_wait COMMAND...` runs the launcher COMMAND (normally `setsid python -m
# megasnow.train.torchrun ...`) in the background, passes SIGTERM/SIGHUP (as SIGTERM) and SIGINT on to it once,
# waits until it has exited, and exits with the trainer's exit code (rank 0 writes it to MEGASNOW_EXIT_STATUS_FILE),
# else the launcher's.
#
# Why this shape: with `setsid` the launcher has its own session, so a signal reaches it once, from the traps here,
# whether it was sent to this script alone (kill, a scheduler) or to the terminal's whole process group (Ctrl-C);
# torchrun passes it on to the ranks, which finish their step and save. `wait` returns early whenever a trap runs,
# hence the loop. The status file is removed only after the launcher (and so every rank) is gone.

_megasnow_stop_launcher() {
    _MEGASNOW_STOP_SIGNAL=$1
    if [[ -n $_MEGASNOW_LAUNCHER_PID ]]; then kill -"$1" "$_MEGASNOW_LAUNCHER_PID" 2>/dev/null || true; fi
}

_megasnow_remove_status_file() {
    if [[ -z $_MEGASNOW_LAUNCHER_PID ]] || ! kill -0 "$_MEGASNOW_LAUNCHER_PID" 2>/dev/null; then
        rm -f "$MEGASNOW_EXIT_STATUS_FILE"
    fi
}

run_and_wait() {
    MEGASNOW_EXIT_STATUS_FILE=$(mktemp)
    export MEGASNOW_EXIT_STATUS_FILE
    # torchrun gives the ranks this long to finish their step and save after a signal, then SIGKILLs them (its
    # default, 30 s, can be shorter than a step plus a checkpoint save of a large model).
    export TORCH_ELASTIC_SHUTDOWN_TIMEOUT=${TORCH_ELASTIC_SHUTDOWN_TIMEOUT:-600}
    _MEGASNOW_LAUNCHER_PID=
    _MEGASNOW_STOP_SIGNAL=
    trap '_megasnow_stop_launcher TERM' TERM HUP
    trap '_megasnow_stop_launcher INT' INT
    trap _megasnow_remove_status_file EXIT
    "$@" &
    _MEGASNOW_LAUNCHER_PID=$!
    if [[ -n $_MEGASNOW_STOP_SIGNAL ]]; then _megasnow_stop_launcher "$_MEGASNOW_STOP_SIGNAL"; fi  # came before it
    local rc=0
    while true; do
        wait "$_MEGASNOW_LAUNCHER_PID" && rc=0 || rc=$?
        if ! kill -0 "$_MEGASNOW_LAUNCHER_PID" 2>/dev/null; then
            break
        fi
    done
    if [[ -s $MEGASNOW_EXIT_STATUS_FILE ]]; then
        rc=$(<"$MEGASNOW_EXIT_STATUS_FILE")
    fi
    exit "$rc"
}
