"""Media node settings, from environment variables (MEDIA_*)."""

import socket

from pydantic import Field

from services.common.settings import CommonSettings


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


class MediaSettings(CommonSettings):
    # Identity and placement
    media_node_id: str = Field(default_factory=lambda: socket.gethostname().split(".")[0])
    media_capacity: int = 200  # subscribers this node accepts
    # ICE: host candidate addresses (comma-separated) and STUN/TURN URLs. No STUN by
    # default: aiortc would otherwise use a public server.
    media_ice_host: str = "127.0.0.1"
    media_ice_servers: str = ""
    media_ice_username: str = ""
    media_ice_credential: str = ""
    # UDP ports for ICE host candidates, e.g. 40000-44999; 0 = any free port.
    media_udp_port_min: int = 0
    media_udp_port_max: int = 0
    # Slots every subscriber negotiates once: A audio, V video, S screen
    media_slots_audio: int = 6
    media_slots_video: int = 6
    media_slots_screen: int = 1
    # Forwarding
    media_history_size: int = 1024  # packets kept per track for NACKs (power of two)
    media_keyframe_interval: float = 0.3  # at most one PLI per track per interval
    media_remb_floor: int = 300_000
    media_remb_cap: int = 2_500_000
    media_heartbeat_interval: float = 1.0
    # HTTP /healthz and /metrics; 0 disables it
    media_http_host: str = "127.0.0.1"
    media_http_port: int = 0

    @property
    def ice_hosts(self) -> list[str]:
        return _csv(self.media_ice_host)

    @property
    def ice_server_urls(self) -> list[str]:
        return _csv(self.media_ice_servers)
