"""Settings of the signaling service, read from environment variables.

Service-specific variables carry the `SIGNALING_` prefix (e.g. `SIGNALING_PORT`);
the shared ones (`NATS_URL`, `REDIS_URL`, `JWT_PUBLIC_KEY[_FILE]`, ...) come from
`CommonSettings`.
"""

import os
import socket

from services.common.settings import CommonSettings


def _default_replica_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class SignalingSettings(CommonSettings):
    signaling_host: str = "127.0.0.1"
    signaling_port: int = 8080
    # Names this replica in logs, NATS connection names and event sources.
    signaling_replica_id: str = ""
    # A participant who reconnects within this many seconds resumes without left/joined.
    signaling_reconnect_grace_seconds: float = 10.0
    # A replica silent this long is dead; its clients' grace periods start then.
    signaling_replica_timeout_seconds: float = 15.0
    # Largest accepted WebSocket text frame; bigger frames get an `invalid` error.
    signaling_max_frame_bytes: int = 64 * 1024
    # Largest SDP offer accepted in publish/subscribe.
    signaling_max_sdp_bytes: int = 48 * 1024
    # Frames hard-closed by the WebSocket layer (1009) above this size.
    signaling_ws_max_bytes: int = 1024 * 1024
    # Per-connection token bucket: sustained requests per second and burst.
    signaling_rate_per_second: float = 20.0
    signaling_rate_burst: int = 40
    # Consecutive rate-limited frames after which the connection is closed (4429).
    signaling_flood_close_after: int = 50
    # How long webinar data fetched from the registry is reused.
    signaling_webinar_cache_seconds: float = 2.0
    # Timeout of NATS requests to the registry, media nodes and chat.
    signaling_request_timeout_seconds: float = 5.0
    # A media node silent for this long is considered down.
    signaling_media_node_timeout_seconds: float = 3.0
    # Subscriber slots negotiated once per subscribe (DESIGN.md, "Scaling the media tier").
    signaling_slots_audio: int = 6
    signaling_slots_video: int = 6
    signaling_slots_screen: int = 1
    # Frames queued for one slow client before it is disconnected.
    signaling_send_queue: int = 1000

    # Where browsers reach the registry (registration page) and which ICE servers they
    # use (JSON list of RTCIceServer dicts; empty = host candidates only, no public STUN).
    public_registry_url: str = "http://127.0.0.1:8081"
    signaling_client_ice_servers: str = "[]"

    def replica_id(self) -> str:
        return self.signaling_replica_id or _default_replica_id()
