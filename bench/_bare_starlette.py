"""The floor for bench/forward_auth.py: a Starlette app with one route returning 200, served
like `twofa serve` (uvloop, httptools; several workers each on a SO_REUSEPORT socket of its
own). Nothing twofa can do is faster.

    python bench/_bare_starlette.py --port P [--workers N]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from twofa.cli.workers import run_workers


async def ok(request: Request) -> Response:
    return PlainTextResponse("ok")


app = Starlette(routes=[Route("/healthz", ok)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    options = {
        "host": "127.0.0.1",
        "port": args.port,
        "loop": "uvloop",
        "http": "httptools",
        "access_log": False,
        "log_level": "warning",
        "server_header": False,
    }
    if args.workers == 1:
        uvicorn.run(app, **options)
        return
    sys.path.insert(0, str(Path(__file__).parent))  # the workers import this module by name
    run_workers(
        uvicorn.Config("_bare_starlette:app", workers=args.workers, **options), args.workers
    )


if __name__ == "__main__":
    main()
