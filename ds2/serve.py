"""`ds2 serve --checkpoint best [--host H] [--port P]`: the model behind OpenAI's transcription API.

    ds2 serve --checkpoint best --host 0.0.0.0 --port 8000
    curl -F file=@speech.wav -F model=ds2-small http://localhost:8000/v1/audio/transcriptions

The API, the limits and the batching are in docs/serving.md; the settings are the config's serve section
(--host and --port are shorthands for serve.host and serve.port; the rest: --set serve.max_wait_ms=20, ...).
The default decoder is the one `ds2 eval` would use for the same checkpoint and options (the LM that
`ds2 tune-lm` tuned for it, if any, else greedy; --decoder NAME chooses); a request may name another of
ds2.decoders (greedy, prefix, lm) with its `decoder` field.

Start-up, in order: the address is taken (a mistake or a busy port ends here, in one line), the checkpoint
loaded (connections are refused meanwhile), then the server listens and compiles the model's graph in the
background: GET /health answers 503 until it is compiled, then 200. SIGTERM (or Ctrl-C) stops accepting
connections and lets the requests in flight finish (serve.drain_seconds at most).
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
import time

from ds2.config import Config, add_decode_options, add_shorthand

log = logging.getLogger("ds2.serve")


def add_arguments(parser) -> None:
    parser.add_argument("--checkpoint", default="best", metavar="PATH|best|last",
                        help="checkpoint file, or best / last of the run in run_dir (default: best)")
    add_shorthand(parser, "--host", "serve.host", "address to listen on (default 127.0.0.1; 0.0.0.0: every "
                  "interface)", metavar="ADDRESS")
    add_shorthand(parser, "--port", "serve.port", "TCP port (default 8000)", metavar="PORT")
    add_decode_options(parser)


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to host:port (not yet accepting: connections are refused until the server starts)."""
    from ds2.errors import UserError

    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise UserError(f"cannot listen on {host}: {exc.strerror}; give an address of this machine with --host "
                        f"(127.0.0.1, or 0.0.0.0 for every interface)") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port} ({exc.strerror}): another program has the port, or the "
                        f"address is not this machine's; choose another with --port / --host") from None
    return sock


def model_id(cfg: Config, stored: Config) -> str:
    return cfg.serve.model_name or f"ds2-{stored.name}"


def offered_decoders(cfg: Config, labels: str, checkpoint_path, checkpoint_step: int):
    """(the default decoder, {name: decoder} of every decoder a request may name).

    The default is the one `ds2 eval` builds for these options; every other decoder of ds2.decoders is
    offered too, with the options that apply to it, when it can be built (the lm decoder needs an LM)."""
    from ds2.decoders import DECODERS
    from ds2.errors import UserError
    from ds2.inference import build_decoder

    default = build_decoder(cfg, labels, checkpoint_path, checkpoint_step)
    offered = {default.kind: default}
    for name in DECODERS:
        if name not in offered:
            try:
                offered[name] = build_decoder(cfg, labels, checkpoint_path, checkpoint_step, name=name)
            except UserError as exc:
                log.info("ds2 serve: decoder %s not offered: %s", name, exc)
    return default, offered


def run(cfg: Config, args) -> int:
    sock = listening_socket(cfg.serve.host, cfg.serve.port)
    try:
        return serve(cfg, args, sock)
    finally:
        sock.close()


def serve(cfg: Config, args, sock: socket.socket) -> int:
    import uvicorn

    from ds2.errors import UserError
    from ds2.inference import load_for_inference
    from ds2.runtime import configure_mindspore
    from ds2.serving.app import Service, create_app
    from ds2.serving import intake
    from ds2.serving.batcher import Batcher
    from ds2.serving.recognizer import Recognizer

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout)
    # The form parser's own complaints about a malformed upload: the request's log line has its 400.
    logging.getLogger("python_multipart").setLevel(logging.ERROR)
    settings = cfg.serve
    configure_mindspore(cfg)
    # One compiled graph for every batch shape, whatever the run trained with.
    try:
        loaded = load_for_inference(cfg, args.checkpoint, list(args.overrides) + ["train.shapes=dynamic"])
    except PermissionError as exc:
        raise UserError(f"cannot read {exc.filename} as uid {os.getuid()}: make the runs "
                        f"folder readable to it (chmod -R a+rX runs; make serve and Compose run the server as the "
                        f"image's user ds2)") from None
    labels = loaded.cfg.model.labels
    default, decoders = offered_decoders(cfg, labels, loaded.path, loaded.meta["step"])
    recognizer = Recognizer(loaded, decoders)
    batcher = Batcher(recognizer.run, max_batch_size=settings.max_batch_size,
                      max_batch_frames=int(settings.max_batch_seconds / recognizer.feature_seconds),
                      max_wait=settings.max_wait_ms / 1000, max_queue=settings.max_queue)
    service = Service(model_id(cfg, loaded.cfg), labels, recognizer.frame_seconds, loaded.cfg.features, settings,
                      {name: d.description for name, d in decoders.items()}, default.kind, batcher)
    server = uvicorn.Server(uvicorn.Config(create_app(service), log_config=None, access_log=False, lifespan="off",
                                           timeout_graceful_shutdown=settings.drain_seconds))
    stop_on_signal = server.handle_exit

    def drain_on_signal(sig, frame):
        # GET /health says draining from now on, so a load balancer sends no more, while those in flight finish.
        service.draining = True
        log.info("ds2 serve: signal %d: finishing the requests in flight, accepting no new ones", sig)
        stop_on_signal(sig, frame)

    server.handle_exit = drain_on_signal
    failure = []

    def warm_up():
        started = time.monotonic()
        try:
            intake.warm_up(loaded.cfg.features)
            recognizer.warm_up()
        except Exception as exc:  # the model cannot run here: stop the server, say why
            failure.append(exc)
            server.should_exit = True
            return
        batcher.start()
        service.ready = True
        log.info("ready: %s's audio intake and graph warmed up in %.1f s; decoders: %s (default %s)",
                 service.model_id, time.monotonic() - started, ", ".join(decoders), default.kind)

    shown_host = f"[{settings.host}]" if ":" in settings.host else settings.host
    log.info("ds2 serve: %s from %s (step %s), decoder %s; listening on http://%s:%d (GET /health answers 200 "
             "once the graph is compiled)", service.model_id, loaded.path, loaded.meta["step"], default.description,
             shown_host, settings.port)
    threading.Thread(target=warm_up, name="warm-up", daemon=True).start()
    # uvicorn handles SIGINT / SIGTERM while it runs and raises the signal again once it has drained, to
    # the handler that was there before: a handler that does nothing lets ds2 serve end cleanly (exit 0).
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    batcher.stop()
    if failure:
        from ds2.errors import first_line

        print(f"ds2 serve: the model did not run ({first_line(failure[0])}); python -m envcheck --stage eval says "
              f"whether this environment can run it", file=sys.stderr)
        return 1
    log.info("ds2 serve: stopped")
    return 0

