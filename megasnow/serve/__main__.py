"""`python -m megasnow.serve CHECKPOINT_OR_HF_DIR`: load the model, then serve the OpenAI API with uvicorn until
SIGINT/SIGTERM (flags: cli_args.py; docs/serving.md)."""
import asyncio
import errno
import os
import signal
import socket
import sys
import threading
import time

from megasnow.errors import UserError
from megasnow.serve.cli_args import DTYPES, check_args, check_files, make_parser
from megasnow.utils.cli import run_tool


def bind_socket(host, port):
    """A listening-ready TCP socket (port 0: the OS picks a free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise UserError(bind_error(host, port, e)) from None
    return sock


def bind_error(host, port, e):
    """The one-line message of a failed bind: a port clash or a privileged port names --port, an address this
    machine cannot listen on (not one of its interfaces, or not an address at all) names --host."""
    reason = e.strerror or str(e)
    if e.errno == errno.EADDRINUSE:
        return f"--port {port}: already in use on {host} ({reason}); pick another port or --port 0"
    if e.errno == errno.EACCES and 0 < port < 1024:
        return f"--port {port}: ports below 1024 need root ({reason}); pick a port >= 1024 or --port 0"
    return (f"--host {host}: cannot listen on this address ({reason}); give an address of this machine: 127.0.0.1 "
            f"(this machine only), 0.0.0.0 (every interface), ::1 / :: for IPv6, or a host name that resolves to one")


def served_names(flag_names, folder_name, model_arg):
    """(listed, aliases): the model ids /v1/models lists and the ids also accepted. With --served-model-name: its
    names, no alias (as vLLM). Without: the folder's name (megasnow's default id, unchanged for existing clients)
    and, as an alias, the model path exactly as given on the command line (vLLM's default id, so a request written
    for `vllm serve ckpt/x` finds the model)."""
    if flag_names:
        return list(dict.fromkeys(flag_names)), []
    return [folder_name], [a for a in [os.fspath(model_arg)] if a != folder_name]


async def serve(server, sock, ready_line):
    """Run uvicorn on `sock`; print `ready_line` once it accepts connections."""
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    while not server.started and not task.done():
        await asyncio.sleep(0.02)
    if server.started:
        print(ready_line, flush=True)
    await task


def run_server(server, sock, ready_line, on_stop=None):
    """Serve in a thread while the main thread owns SIGINT/SIGTERM: either calls `on_stop()` (the scheduler's
    shutdown: no new requests, running ones aborted so their streams end at once) and stops uvicorn gracefully (a
    second SIGINT forces it). Returns the signal that stopped it (or None); re-raises what the server thread
    raised."""
    received, failure = [], []

    def on_signal(sig, frame):
        received.append(sig)
        if on_stop is not None and len(received) == 1:
            on_stop()
        if server.should_exit and sig == signal.SIGINT:
            server.force_exit = True
        server.should_exit = True

    def target():
        try:
            asyncio.run(serve(server, sock, ready_line))
        except BaseException as e:  # noqa: BLE001 - handed to the main thread
            failure.append(e)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    thread = threading.Thread(target=target, name="megasnow-serve-http")
    try:
        thread.start()
        while thread.is_alive():
            thread.join(0.25)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if failure:
        raise failure[0]
    return received[0] if received else None


def main(argv=None):
    parser = make_parser()
    args = check_args(parser, parser.parse_args(argv))
    check_files(args)  # every file flag, before the slow load
    from megasnow.utils.device import resolve_device

    device = resolve_device(args.device, "--device")  # a device this machine lacks: one line, before the load
    sock = bind_socket(args.host, args.port)  # before the slow load: a taken port fails at once

    import torch
    import uvicorn

    from megasnow.generation.local import LocalEngine
    from megasnow.serve.api_router import build_app
    from megasnow.serve.faults import FaultInjector
    from megasnow.serve.request_log import RequestLog
    from megasnow.serve.scheduler import BatchScheduler
    from megasnow.serve.serving import OpenAIServing

    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = None if DTYPES[args.dtype] is None else getattr(torch, DTYPES[args.dtype])
    start = time.time()
    print(f"megasnow.serve: loading {args.model} on {device}...", file=sys.stderr, flush=True)
    engine = LocalEngine.from_path(args.model, device=device, dtype=dtype, tokenizer=args.tokenizer,
                                   chat_template=args.chat_template,
                                   model_name=(args.served_model_name or [None])[0],
                                   max_num_seqs=args.max_num_seqs, max_batch_tokens=args.max_batch_tokens,
                                   fim_format=args.fim_format)
    names, aliases = served_names(args.served_model_name, engine.model_name, args.model)
    if args.max_model_len is not None:  # vLLM's flag: a shorter context than the model's (never a longer one)
        if args.max_model_len > engine.max_model_len:
            raise UserError(f"--max-model-len {args.max_model_len} exceeds the context of {args.model} "
                            f"(max_seq_len {engine.max_model_len}): give at most {engine.max_model_len}, or leave it "
                            f"out")
        engine.max_model_len = args.max_model_len
    engine.warm_up()
    scheduler = BatchScheduler(engine, batch_wait_s=args.batch_wait_ms / 1000.0, max_queue=args.max_queue)
    request_log = RequestLog(args.request_log) if args.request_log else None
    faults = FaultInjector(args.fault_rate, args.fault_seed, args.fault_kinds) if args.fault_rate > 0 else None
    serving = OpenAIServing(scheduler, names, args.max_tokens_default, request_log, faults, args.fault_stall_s,
                            aliases=aliases)
    app = build_app(serving, api_key=args.api_key)
    # lifespan off: the app has no startup/shutdown hooks, and a forced exit (second Ctrl-C) would otherwise log
    # the cancelled lifespan task's traceback. The graceful timeout is a backstop: shutdown() ends every request
    # within one generation step.
    config = uvicorn.Config(app, log_level=args.log_level, access_log=args.log_level in ("info", "debug"),
                            timeout_graceful_shutdown=5, lifespan="off")
    server = uvicorn.Server(config)
    host, port = sock.getsockname()[:2]
    ready = (f"megasnow.serve: ready on http://{host}:{port}/v1 serving {', '.join(map(repr, names))}"
             f"{''.join(f' (also as {a!r})' for a in aliases)} "
             f"(max_model_len {engine.max_model_len}, max_num_seqs {engine.max_num_seqs}, "
             f"loaded in {time.time() - start:.1f} s, pid {os.getpid()})")
    scheduler.start()
    try:
        stopped_by = run_server(server, sock, ready, on_stop=scheduler.shutdown)
    finally:
        scheduler.stop()
        if request_log is not None:
            request_log.close()
        injected = f", faults injected {faults.injected}" if faults is not None else ""
        from megasnow.utils.progress import unit_for

        def counted(n, unit):
            return f"{n} {unit_for(n, unit)}"

        print(f"megasnow.serve: stopped after {counted(serving.requests, 'requests')} ("
              f"{counted(scheduler.sequences, 'sequences')} in {counted(scheduler.batches, 'batches')}, largest "
              f"{scheduler.max_batch_seen}){injected}", file=sys.stderr, flush=True)
    if stopped_by == signal.SIGINT:
        raise KeyboardInterrupt  # the CLI rule: Ctrl-C exits 130 with one line
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main, prog="megasnow.serve", on_interrupt="server stopped"))
