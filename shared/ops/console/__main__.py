"""`python -m shared.ops.console`: the console on MODELBUS_CONSOLE_HOST:MODELBUS_CONSOLE_PORT."""

from __future__ import annotations

import logging

import uvicorn

from shared.ops.console import make_app
from shared.runtime.listener import server_config
from shared.runtime.runner import service_settings

if __name__ == "__main__":
    settings = service_settings("console")
    logging.getLogger("modelbus.console").info(
        "console on http://%s:%d/ui/", settings.console_host, settings.console_port
    )
    app = make_app(settings)
    uvicorn.Server(server_config(app, settings.console_host, settings.console_port, settings, "on")).run()
