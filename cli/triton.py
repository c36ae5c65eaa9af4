"""``tts-build-engine triton`` and ``triton-serve``: a Triton model repository and a real server.

Thin adapter: flags become :class:`~hifitrt.serving.triton_repo.RepositoryOptions` and keyword
arguments of :func:`~hifitrt.serving.triton_server.start_triton`; the results are printed here.
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add the Triton subcommands to the ``tts-build-engine`` parser."""
    p = sub.add_parser("triton", help="write a Triton Inference Server model repository for engine directories")
    p.add_argument("engine_dirs", nargs="+", metavar="ENGINE_DIR", help="engine directories (tts-build-engine build)")
    p.add_argument("--out", required=True, metavar="REPO", help="model repository to create or add to")
    p.add_argument("--name", action="append", default=[], metavar="NAME",
                   help="model name per engine directory, in order (default: the directory's name)")
    p.add_argument("--max-batch", type=int, default=None, metavar="N",
                   help="requests per batch (Python model default 8; plain models: at most the profiles' batch_max)")
    p.add_argument("--max-queue-delay-us", type=int, default=2000, metavar="N",
                   help="how long Triton holds a partial batch for more requests (default 2000)")
    p.add_argument("--max-queue", type=int, default=64, metavar="N",
                   help="waiting requests before new ones are rejected at once (default 64)")
    p.add_argument("--queue-timeout-us", type=int, default=10_000_000, metavar="N",
                   help="reject a request that waited this long in the queue (default 10 s)")
    p.add_argument("--instances", type=int, default=1, metavar="N", help="model instances per device (default 1)")
    p.add_argument("--python-only", action="store_true",
                   help="write only the Python-backend models (no plain tensorrt_plan / onnxruntime_onnx model)")
    p.set_defaults(func=cmd_triton)

    p = sub.add_parser("triton-serve", help="run Triton Inference Server on a model repository")
    p.add_argument("repository", metavar="REPO", help="model repository (tts-build-engine triton)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--http-port", type=int, default=8000)
    p.add_argument("--grpc-port", type=int, default=8001)
    p.add_argument("--metrics-port", type=int, default=8002)
    p.add_argument("--model", action="append", default=[], metavar="NAME", help="load only these models")
    p.add_argument("--ready-timeout", type=float, default=120.0, metavar="S",
                   help="seconds to wait for the models to load (default 120)")
    p.set_defaults(func=cmd_triton_serve)


def cmd_triton(args: argparse.Namespace) -> int:
    from hifitrt.serving.triton_repo import RepositoryOptions, write_repository

    options = RepositoryOptions(
        max_batch=args.max_batch, max_queue_delay_us=args.max_queue_delay_us, max_queue=args.max_queue,
        queue_timeout_us=args.queue_timeout_us, instances=args.instances, plain=not args.python_only,
    )
    result = write_repository(args.engine_dirs, args.out, names=args.name, options=options)
    print(f"Triton model repository {result.path}")
    for model in result.models:
        note = "mixed-length batching (VocoderEngine.batch)" if model.kind == "python" \
            else "batches equal-length requests only"
        print(f"  {model.name:24s} {model.kind:17s} max_batch_size {model.max_batch_size:<3d} {note}")
    print(f"serve it: tts-build-engine triton-serve {result.path}")
    return 0


def cmd_triton_serve(args: argparse.Namespace) -> int:
    from hifitrt.serving.triton_server import start_triton

    server = start_triton(
        args.repository, host=args.host, http_port=args.http_port, grpc_port=args.grpc_port,
        metrics_port=args.metrics_port, models=args.model or None, ready_timeout=args.ready_timeout,
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        print(f"tritonserver {server.install}")
        print(f"  models: {', '.join(server.loaded)}")
        for name, why in server.skipped.items():
            print(f"  not loaded: {name} ({why})")
        print(f"  HTTP    {server.http_url}  (POST {server.http_url}/v2/models/{server.loaded[0]}/infer)")
        print(f"  gRPC    {server.grpc_url}")
        print(f"  metrics {server.metrics_url}")
        print(f"  log     {server.log_path}")
        print("Ctrl-C stops it.", flush=True)
        while not stop.wait(0.5):
            if not server.running():
                print(f"error: tritonserver exited with code {server.process.returncode}:\n{server.log_tail()}",
                      file=sys.stderr)
                return 1
    finally:
        code = server.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)
    print(f"tritonserver stopped (exit code {code})")
    return 0 if code == 0 else 1
