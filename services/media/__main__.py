"""`python -m services.media`: one media node (settings from MEDIA_* env vars)."""

import asyncio
import signal

from services.common.telemetry import setup_logging, setup_tracing
from services.media.service import run
from services.media.settings import MediaSettings


async def main() -> None:
    settings = MediaSettings()
    setup_logging(f"media[{settings.media_node_id}]", settings.log_level)
    setup_tracing("media", settings.otel_exporter_otlp_endpoint)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await run(settings, stop)


if __name__ == "__main__":
    asyncio.run(main())
