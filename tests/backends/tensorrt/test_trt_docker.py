"""docker/jetson-tensorrt cannot be built here (no Docker engine): check what can be checked."""

from __future__ import annotations

import re
from pathlib import Path

DOCKER = Path(__file__).resolve().parents[3] / "docker" / "jetson-tensorrt"
PINNED = re.compile(r"^[\w./-]+(:[\w][\w.-]*)?(@sha256:[0-9a-f]{64})?$")


def _from_images(dockerfile: Path) -> list[str]:
    images = []
    for line in dockerfile.read_text().splitlines():
        parts = line.split()
        if parts and parts[0].upper() == "FROM":
            images.append(next(p for p in parts[1:] if not p.startswith("--")))
    return images


def test_every_from_is_pinned_by_tag_or_digest() -> None:
    dockerfiles = sorted(DOCKER.glob("Dockerfile*"))
    assert dockerfiles, f"no Dockerfile in {DOCKER}"
    for dockerfile in dockerfiles:
        for image in _from_images(dockerfile):
            assert PINNED.match(image), f"{dockerfile.name}: FROM {image} is malformed"
            name_tag = image.split("@")[0]
            has_tag = ":" in name_tag.rsplit("/", 1)[-1]
            assert has_tag or "@sha256:" in image, f"{dockerfile.name}: FROM {image} is not pinned"
            assert not name_tag.endswith(":latest"), f"{dockerfile.name}: FROM {image} uses :latest"


def test_board_images_need_nothing_of_ours() -> None:
    """The board receives an ONNX and a trtexec line: no pip installs, trtexec as the entry point."""
    for dockerfile in sorted(DOCKER.glob("Dockerfile*")):
        text = dockerfile.read_text()
        runs = [line for line in text.splitlines() if line.strip().upper().startswith("RUN")]
        assert not any("pip" in line for line in runs), f"{dockerfile.name} installs Python packages"
        assert '"/usr/src/tensorrt/bin/trtexec"' in text
