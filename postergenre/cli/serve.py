"""``postergenre serve RUN``: a run's predictions and heatmaps over HTTP, with a web page (the serve extra)."""

from __future__ import annotations

import argparse
import importlib.util
import ipaddress
import socket
import sys
from pathlib import Path

SERVE_MODULES = {"fastapi": "fastapi", "uvicorn": "uvicorn", "python_multipart": "python-multipart"}
INSTALL_HINT = "pip install 'postergenre[serve]'"


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve a run's genre predictions and heatmaps over HTTP, with a web page",
        description="Start a web service for a run folder: a page at / to drop a poster on and see its genres and "
        "heatmaps, and a JSON API (POST /api/predict, POST /api/explain?genre=G, GET /api/model; docs at /docs). "
        f"Needs the serve extra: {INSTALL_HINT}.",
    )
    parser.add_argument("run_dir", metavar="RUN", type=Path, help="run folder (the --out of postergenre train)")
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: %(default)s, this machine only)"
    )
    parser.add_argument("--port", type=int, default=8000, help="port to listen on; 0 picks a free one (default: 8000)")
    parser.add_argument(
        "--max-upload-mb",
        type=float,
        default=10.0,
        metavar="MB",
        help="largest poster upload accepted, in MB (default: %(default)g)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from postergenre.errors import PosterGenreError

    require_serve_extra()
    if not 0 <= args.port <= 65535:
        raise PosterGenreError(f"--port must be between 0 and 65535, got {args.port}")
    # Before torch is ever imported (the first heatmap request): idle OpenMP workers sleep, not spin.
    from postergenre.explain.choices import prefer_passive_threads

    prefer_passive_threads()
    from postergenre.serve.app import create_app

    app = create_app(args.run_dir, args.max_upload_mb)
    sock = bind(args.host, args.port)
    host, port = sock.getsockname()[:2]
    if not _is_loopback(args.host):
        print(
            f"warning: listening on {args.host}: anyone who can reach this machine can use the service", file=sys.stderr
        )
    url_host = f"[{host}]" if ":" in host else host
    print(
        f"serving {app.state.service.name} at http://{url_host}:{port}/ (API docs at /docs); Ctrl+C to stop", flush=True
    )
    serve(app, sock, quiet=args.quiet)
    return 0


def require_serve_extra() -> None:
    from postergenre.errors import PosterGenreError

    missing = [package for module, package in SERVE_MODULES.items() if importlib.util.find_spec(module) is None]
    if missing:
        raise PosterGenreError(f"postergenre serve needs {', '.join(missing)}, which is not installed; {INSTALL_HINT}")


def bind(host: str, port: int) -> socket.socket:
    """A listening socket, bound here so that a taken port is a one-line error before the server starts."""
    from postergenre.errors import PosterGenreError

    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        # Listening now lets connections wait in the backlog until uvicorn is up, so the URL printed works at once.
        sock.listen(2048)
    except OSError as exc:
        raise PosterGenreError(
            f"cannot listen on {host}:{port} ({exc.strerror or exc}); pass another --port, or --port 0 for a free one"
        ) from exc
    sock.set_inheritable(True)
    return sock


def serve(app, sock: socket.socket, *, quiet: bool = False) -> None:
    """Run uvicorn on the socket until Ctrl+C (uvicorn then finishes the requests in flight)."""
    import uvicorn

    config = uvicorn.Config(app, log_level="warning" if quiet else "info", timeout_graceful_shutdown=10)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:
        # uvicorn re-raises Ctrl+C once it has shut down cleanly; for a server that is the normal way to stop.
        print("stopped", file=sys.stderr)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
