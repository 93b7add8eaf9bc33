"""Serving the app: uvicorn on uvloop and httptools, shut down cleanly on SIGINT/SIGTERM."""

from __future__ import annotations

import uvicorn

from gateway.app import create_app
from gateway.config import Config

__all__ = ["serve"]


def serve(config: Config, log_level: str = "info", config_path: str | None = None) -> None:
    app = create_app(config, config_path=config_path)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=config.gateway.host,
            port=config.gateway.port,
            loop="uvloop",
            http="httptools",
            lifespan="on",
            access_log=False,
            log_config=None,  # keep the logging set up by the CLI
            log_level=log_level,
            timeout_graceful_shutdown=30,
        )
    )
    server.run()
