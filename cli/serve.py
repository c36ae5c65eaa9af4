"""``tts-build-engine serve``: the HTTP service (thin adapter over ``hifitrt.serving``).

Flags become a :class:`~hifitrt.serving.config.ServeOptions` and arguments of
:func:`~hifitrt.serving.app.create_app`; :func:`~hifitrt.serving.server.run_server` runs it.
"""
from __future__ import annotations

import argparse


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add ``serve`` to the ``tts-build-engine`` parser."""
    p = sub.add_parser("serve", help="serve engines over HTTP (vocoding, OpenAI-style speech, metrics)")
    p.add_argument("targets", nargs="*", metavar="TARGET",
                   help="engine directories (with --backend torch: any vocoder source); the first is the default voice")
    p.add_argument("--voice", action="append", default=[], metavar="NAME=TARGET",
                   help="a named voice (repeatable); unnamed targets are named after their source")
    p.add_argument("--model", metavar="MODEL_ID_OR_DIR",
                   help="ModelScope Sambert-HifiGan model for POST /v1/audio/speech")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-batch", type=int, default=None, metavar="N",
                   help="mel windows per engine call (default: 8 on a GPU, 1 on a CPU, where batching "
                        "only adds padding and makes new streams wait)")
    p.add_argument("--max-wait-ms", type=float, default=5.0, metavar="MS",
                   help="how long a request may wait for others to batch with (default 5)")
    p.add_argument("--max-padding", type=float, default=1.25, metavar="X",
                   help="padded frames per batch at most X times the real frames (default 1.25; raise on a GPU)")
    p.add_argument("--max-queue", type=int, default=64, metavar="N",
                   help="requests per voice waiting or running; more get 503 at once (default 64)")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="engine calls in flight per voice (default: 1 on a GPU; one per core on a CPU, each "
                        "single-threaded, which gives more throughput than one call on all cores when the cores "
                        "are busy; 1 gives each call all cores)")
    p.add_argument("--engine-threads", type=int, default=None, metavar="N",
                   help="threads of one engine call on a CPU backend (default: the cores divided among the workers)")
    p.add_argument("--first-window-workers", type=int, default=None, metavar="N",
                   help="extra engine calls in flight that run only streams' first windows, so a new stream's "
                        "first audio does not wait behind long windows (default: one per core on a CPU, 0 on a GPU)")
    p.add_argument("--worker-nice", type=int, default=5, metavar="N",
                   help="with a first-window lane, raise the engine workers' nice value by N so the OS runs "
                        "first windows first (default 5; 0: leave priorities alone, e.g. on a machine shared "
                        "with other work)")
    p.add_argument("--first-chunk-frames", type=int, default=8, metavar="N",
                   help="vocode a mel's first N frames as their own window so streams start early "
                        "(default 8; 0: one window per mel, no context overhead)")
    p.add_argument("--split-overhead", type=float, default=0.5, metavar="F",
                   help="split off that first window only when the frames it vocodes twice (its context) "
                        "are at most F of the mel (default 0.5)")
    p.add_argument("--timeout-s", type=float, default=30.0, metavar="S", help="per-request timeout -> 504 (default 30)")
    p.add_argument("--max-frames", type=int, default=8192, metavar="N", help="longest mel accepted (default 8192)")
    p.add_argument("--api-key", metavar="KEY", help="require 'Authorization: Bearer KEY' on every route but /healthz")
    p.add_argument("--cache-mb", type=float, default=0.0, metavar="MB",
                   help="LRU cache of /v1/audio/speech answers, in MB (default 0: off)")
    p.add_argument("--backend", choices=("torch",), help="serve vocoder sources with PyTorch (CUDA when present)")
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    import logging

    from hifitrt.errors import HifitrtError
    from hifitrt.serving.app import create_app
    from hifitrt.serving.config import ServeOptions
    from hifitrt.serving.server import run_server
    from hifitrt.serving.voices import VoiceSpec, parse_voice_arg

    targets = [VoiceSpec(t) for t in args.targets] + [parse_voice_arg(v) for v in args.voice]
    if not targets:
        raise HifitrtError("serve needs an engine directory: tts-build-engine serve ENGINE_DIR [--voice NAME=DIR]")
    if not 0 < args.port < 65536:
        raise HifitrtError(f"--port {args.port} is not a TCP port (1-65535)")
    options = ServeOptions(
        max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, max_padding=args.max_padding,
        max_queue=args.max_queue, workers=args.workers, engine_threads=args.engine_threads,
        first_window_workers=args.first_window_workers, worker_nice=args.worker_nice, timeout_s=args.timeout_s, max_frames=args.max_frames,
        first_chunk_frames=args.first_chunk_frames, split_overhead=args.split_overhead,
        api_key=args.api_key, cache_bytes=int(args.cache_mb * (1 << 20)),
    )
    app = create_app(targets, options=options, backend=args.backend, model=args.model)
    voices = app.state.voices
    for voice in voices.values():
        info = voice.info
        print(f"voice {info.name}: {info.backend} {info.precision} {info.sample_rate} Hz; "
              f"{voice.workers} engine calls in flight + {voice.lane_workers} for first windows, "
              f"up to {voice.max_batch} windows per call")
    if args.host not in ("127.0.0.1", "localhost", "::1") and not args.api_key:
        logging.getLogger(__name__).warning("serving on %s without --api-key: anyone who can reach it may use it",
                                            args.host)
    print(f"serving on http://{args.host}:{args.port} (Ctrl-C or SIGTERM drains and stops)", flush=True)
    run_server(app, host=args.host, port=args.port, log_level="info" if args.verbose else "warning")
    return 0
