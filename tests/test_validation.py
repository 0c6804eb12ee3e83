"""Bad input is refused with the field and the rule named, before any request is sent."""

from __future__ import annotations

import pytest

from conftest import png_bytes
from helpers import total_requests

pytestmark = pytest.mark.anyio

SHOTS_4_AND_1 = [{"prompt": "a door opens", "duration": 4}, {"prompt": "light pours in", "duration": 1}]


async def refused(client, emulator, tool: str, arguments: dict, *expected: str) -> str:
    result = await client.call_tool(tool, arguments)
    assert result.is_error, result.structured_content
    report = result.structured_content
    assert report["error"]["code"] == "validation_error"
    message = report["error"]["message"]
    for fragment in expected:
        assert fragment in message, message
    assert total_requests(emulator) == 0
    return message


CASES = {
    "duration above 15": ("generate_video", {"prompt": "x", "duration": 20}, "duration", "15"),
    "duration below 3": ("generate_video", {"prompt": "x", "duration": 2}, "duration", "3"),
    "prompt too long": ("generate_video", {"prompt": "x" * 2501}, "prompt", "2500"),
    "negative prompt too long": ("generate_video", {"prompt": "x", "negative_prompt": "n" * 2501}, "negative_prompt"),
    "cfg_scale above 1": ("generate_video", {"prompt": "x", "cfg_scale": 1.5}, "cfg_scale"),
    "unknown aspect ratio": ("generate_video", {"prompt": "x", "aspect_ratio": "4:3"}, "aspect_ratio"),
    "no prompt at all": ("generate_video", {"duration": 5}, "prompt", "required"),
    "seven shots": (
        "generate_video",
        {"multi_prompt": [{"prompt": "s", "duration": 1}] * 7, "duration": 7, "provider": "wavespeed"},
        "multi_prompt",
        "6",
    ),
    "shot prompt over 512": (
        "generate_video",
        {"multi_prompt": [{"prompt": "s" * 513, "duration": 5}], "provider": "wavespeed", "mode": "pro"},
        "multi_prompt.0.prompt",
    ),
    "shots do not add up": (
        "generate_video",
        {"multi_prompt": SHOTS_4_AND_1, "duration": 6, "provider": "wavespeed", "mode": "pro"},
        "multi_prompt",
        "add up to 5 s but duration is 6 s",
    ),
    "multi_prompt where the endpoint takes none": (
        "generate_video",
        {"multi_prompt": SHOTS_4_AND_1, "provider": "novita", "mode": "4k"},
        "multi_prompt",
        "highway 4k, wavespeed 4k",
    ),
    "prompt and multi_prompt on an exclusive endpoint": (
        "generate_video",
        {"prompt": "x", "multi_prompt": SHOTS_4_AND_1, "provider": "highway", "mode": "4k"},
        "prompt and multi_prompt",
        "not both",
    ),
    "shot_type outside WaveSpeed": (
        "generate_video",
        {"prompt": "x", "shot_type": "intelligent", "provider": "novita"},
        "shot_type",
        "wavespeed",
    ),
    "element_list outside WaveSpeed": (
        "generate_video",
        {"prompt": "x", "element_list": ["el_1"], "provider": "highway"},
        "element_list",
        "wavespeed",
    ),
    "four elements": ("generate_video", {"prompt": "x", "element_list": ["a", "b", "c", "d"], "provider": "wavespeed"}, "element_list", "3"),
    "unknown provider": ("generate_video", {"prompt": "x", "provider": "acme"}, "provider"),
}


@pytest.mark.parametrize("case", CASES)
async def test_rule_is_enforced_before_sending(client, emulator, case):
    tool, arguments, *expected = CASES[case]
    await refused(client, emulator, tool, arguments, *expected)


async def test_end_image_with_multi_prompt(client, emulator, png_file):
    await refused(
        client, emulator, "animate_image",
        {"image": str(png_file), "end_image": str(png_file), "multi_prompt": SHOTS_4_AND_1, "provider": "novita", "mode": "std"},
        "end_image", "multi_prompt",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("frame.gif", png_bytes(fmt="GIF"), "JPEG or PNG"),
        ("frame.png", b"not an image at all", "not a readable image"),
        ("small.png", png_bytes(640, 200), "at least 300 px"),
        ("wide.png", png_bytes(1600, 400), "between 1:2.5 and 2.5:1"),
        ("tall.png", png_bytes(300, 800), "between 1:2.5 and 2.5:1"),
    ],
)
async def test_bad_images_are_refused(client, emulator, tmp_path, name, content, expected):
    path = tmp_path / name
    path.write_bytes(content)
    await refused(client, emulator, "animate_image", {"image": str(path), "prompt": "x"}, "image", expected)


async def test_image_over_10_mb(client, emulator, tmp_path):
    path = tmp_path / "huge.png"
    path.write_bytes(png_bytes() + b"\0" * (10 * 1024 * 1024))
    await refused(client, emulator, "animate_image", {"image": str(path), "prompt": "x"}, "image", "10 MB")


async def test_missing_image_path(client, emulator, tmp_path):
    missing = tmp_path / "nope.png"
    await refused(client, emulator, "animate_image", {"image": str(missing), "prompt": "x"}, "image", str(missing))


async def test_bad_end_image_is_named(client, emulator, png_file, tmp_path):
    await refused(
        client, emulator, "animate_image",
        {"image": str(png_file), "end_image": str(tmp_path / "gone.jpg"), "prompt": "x"},
        "end_image", "no file",
    )  # fmt: skip


async def test_file_uri_and_data_uri_images_are_accepted(client, emulator, png_file):
    import base64

    for image in (png_file.as_uri(), "data:image/png;base64," + base64.b64encode(png_file.read_bytes()).decode()):
        result = await client.call_tool("animate_image", {"image": image, "prompt": "x", "force_new": True})
        assert not result.is_error, result.structured_content


async def test_phone_jpegs_read_as_mpo_are_accepted(client, emulator, tmp_path):
    from PIL import Image

    path = tmp_path / "phone.jpg"
    frames = [Image.new("RGB", (640, 480), "orange"), Image.new("RGB", (640, 480), "blue")]
    frames[0].save(path, format="MPO", save_all=True, append_images=frames[1:])
    with Image.open(path) as image:
        assert image.format == "MPO"
    result = await client.call_tool("animate_image", {"image": str(path), "prompt": "x", "provider": "novita"})
    assert not result.is_error, result.structured_content
