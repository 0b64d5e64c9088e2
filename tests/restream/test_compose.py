"""The picture and sound composition on real PyAV frames, and destination URLs."""

import struct

import av

from services.restream import destinations
from services.restream.compose import BYTES_PER_SAMPLE, Compositor, layout


def flat(width: int, height: int, luma: int) -> av.VideoFrame:
    frame = av.VideoFrame(width, height, "yuv420p")
    for index, plane in enumerate(frame.planes):
        value = luma if index == 0 else 128
        plane.update(bytes([value]) * plane.buffer_size)
    return frame


def tone(value: int, samples: int = 960) -> av.AudioFrame:
    frame = av.AudioFrame(format="s16", layout="stereo", samples=samples)
    frame.planes[0].update(struct.pack("<h", value) * (2 * samples))
    frame.sample_rate = 48_000
    return frame


def luma_at(planes: tuple[bytes, bytes, bytes], width: int, x: int, y: int) -> int:
    return planes[0][y * width + x]


def test_grid_of_cameras_keeps_aspect_ratio() -> None:
    compositor = Compositor(640, 360, {"4"}, stale_seconds=5)
    compositor.add_video("2", flat(320, 240, 200))  # 4:3 into a 640x360 canvas
    picture = compositor.picture()
    assert (picture.width, picture.height) == (640, 360)
    assert luma_at(picture.planes, 640, 320, 180) == 200  # centre: the camera
    assert luma_at(picture.planes, 640, 5, 180) == 16  # pillarbox: black
    compositor.add_video("3", flat(320, 240, 100))
    two = compositor.picture()
    assert luma_at(two.planes, 640, 160, 180) == 200  # left half: slot 2
    assert luma_at(two.planes, 640, 480, 180) == 100  # right half: slot 3


def test_screen_share_is_large_with_cameras_beside_it() -> None:
    compositor = Compositor(640, 360, {"4"}, stale_seconds=5)
    compositor.add_video("2", flat(320, 240, 200))
    compositor.add_video("4", flat(640, 360, 90))  # the screen slot
    picture = compositor.picture()
    assert luma_at(picture.planes, 640, 240, 180) == 90  # the screen, left and large
    assert luma_at(picture.planes, 640, 560, 40) == 200  # the camera, top right
    screen, cameras = layout(1, True, 640, 360)
    assert screen is not None and screen.width == 480 and cameras[0].x == 480
    assert picture.to_frame().width == 640


def test_audio_slots_are_mixed_and_silence_fills_gaps() -> None:
    compositor = Compositor(640, 360, set(), stale_seconds=5)
    compositor.add_audio("0", tone(1000))
    compositor.add_audio("1", tone(500))
    sound = compositor.sound(960)
    assert len(sound) == 960 * BYTES_PER_SAMPLE
    first, last = struct.unpack_from("<h", sound, 0)[0], struct.unpack_from("<h", sound, 3000)[0]
    assert abs(first - 1500) <= 2 and abs(last - 1500) <= 2
    assert compositor.sound(480) == bytes(480 * BYTES_PER_SAMPLE)  # nothing buffered: silence


def test_destinations_are_redacted() -> None:
    url = "rtmps://a.rtmp.youtube.com:443/live2/secret-key"
    assert destinations.validate(url, 1024) == url
    assert destinations.redact(url) == "rtmps://a.rtmp.youtube.com:443/live2/***"
    assert destinations.redact("rtmp://h/app?key=s") == "rtmp://h/app/***"
