from services.common.settings import CommonSettings


class RestreamSettings(CommonSettings):
    """Environment variables of the restream service (RESTREAM_*, plus the common ones)."""

    restream_host: str = "127.0.0.1"
    # /healthz and /metrics
    restream_port: int = 8084
    # NATS queue group shared by every replica.
    restream_queue: str = "restream"
    # Where recordings are written (one folder per webinar).
    restream_recordings_dir: str = ".data/recordings"
    # The composed picture and its encoding.
    restream_width: int = 1280
    restream_height: int = 720
    restream_fps: int = 25
    restream_video_bitrate: int = 2_500_000
    restream_audio_bitrate: int = 128_000
    # x264 preset: ultrafast..veryslow; faster presets cost less CPU per stream.
    restream_x264_preset: str = "veryfast"
    # Seconds between keyframes in the output (RTMP ingests want 2 s or less).
    restream_keyframe_seconds: float = 2.0
    # Slots the hidden subscriber offers; the same as signaling's (audio, video, screen).
    restream_slots_audio: int = 6
    restream_slots_video: int = 6
    restream_slots_screen: int = 1
    # Host candidate addresses and ICE servers, as the media nodes' settings.
    restream_ice_host: str = "127.0.0.1"
    restream_ice_servers: str = ""
    restream_ice_username: str = ""
    restream_ice_credential: str = ""
    # RTMP destinations (plus one recording) at once per webinar.
    restream_max_destinations: int = 5
    restream_max_url_length: int = 1024
    # Seconds to connect to an RTMP ingest, and to wait for a media node's answer.
    restream_connect_timeout_seconds: float = 5.0
    restream_request_timeout_seconds: float = 10.0
    # A slot whose last frame is older than this is off the picture (s).
    restream_stale_seconds: float = 1.5
