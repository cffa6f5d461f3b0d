"""The HTTP stack's own limit: a Flask app that reads the push and answers 200, under the same gunicorn."""

from __future__ import annotations

import argparse
from typing import Any

from flask import Flask, Response, request

from exporter.config import Config
from exporter.server import GunicornServer, ServerOptions


def create_trivial_app() -> Flask:
    """Reads the body (any HTTP server must) and answers like the receiver, without any other work."""
    app = Flask("trivial")

    @app.post("/push")
    def push() -> Response:
        request.get_data()
        return Response(b'{"status":"ok"}', status=200, mimetype="application/json")

    @app.get("/healthz")
    def healthz() -> Response:
        return Response(b'{"status":"ok"}', status=200, mimetype="application/json")

    return app


class TrivialServer(GunicornServer):
    """The receiver's gunicorn settings (workers, gevent, keep-alive), serving the trivial app."""

    def load(self) -> Any:
        """The trivial app instead of the receiver."""
        return create_trivial_app()


def main() -> None:
    """``python -m bench.trivial --bind HOST:PORT --workers N``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bind", required=True)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    options = ServerOptions(bind=args.bind, workers=args.workers)
    TrivialServer(Config(influx=None, log_level="WARNING"), options).run()


if __name__ == "__main__":
    main()
