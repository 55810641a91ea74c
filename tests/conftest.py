from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings

from function.core.checkpoints import CHECKPOINTS

from .fakes import FakeModel
from .support import QUICK_EXAMPLES

TINY = CHECKPOINTS["tiny"]

# Property tests assert behaviour, not speed: no per-example deadline (a loaded 2-core CI
# machine would otherwise fail them at random). Two profiles: "thorough" (the default: the full
# run and CI) and "quick" (`./dev.sh quick` passes --hypothesis-profile=quick): the same
# properties on a fifth of the examples. Tests that want more than the default use
# support.examples(n), which scales the same way.
hypothesis_settings.register_profile("thorough", deadline=None, print_blob=True, max_examples=100)
hypothesis_settings.register_profile(
    "quick", hypothesis_settings.get_profile("thorough"), max_examples=QUICK_EXAMPLES
)
hypothesis_settings.load_profile("thorough")

REAL_SAM2_FIXTURES = {"tiny_checkpoint", "sam2_model"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test that builds a real SAM2 carries @pytest.mark.sam2, so `-m "not sam2"` (the quick
    loop) never builds one by accident."""
    unmarked = [
        item.nodeid
        for item in items
        if REAL_SAM2_FIXTURES & set(getattr(item, "fixturenames", ())) and not item.get_closest_marker("sam2")
    ]
    if unmarked:
        raise pytest.UsageError("tests that build a real SAM2 need @pytest.mark.sam2: " + ", ".join(unmarked))


@pytest.fixture
def fake_model() -> FakeModel:
    return FakeModel()


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real SAM2.1 tiny built from its config with random weights, saved like Meta's files."""
    import torch
    from sam2.build_sam import build_sam2

    torch.manual_seed(0)
    model = build_sam2(TINY.config, None, device="cpu")
    path = tmp_path_factory.mktemp("ckpt") / TINY.filename
    torch.save({"model": model.state_dict()}, path)
    return path


@pytest.fixture(scope="session")
def sam2_model(tiny_checkpoint: Path):  # type: ignore[no-untyped-def]
    """Loaded through the production path (`build_sam2(config, checkpoint)`)."""
    from function.core.sam2_model import Sam2Model

    return Sam2Model.load(TINY.config, tiny_checkpoint, "cpu")


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A real Label Studio on 127.0.0.1 for the session (tests/lsfixture.py); stopped at the end.

    Skips when `.lsvenv` is missing on a developer machine; under CI it must run, so it fails.
    """
    import os

    from .lsfixture import LS_BIN, start_label_studio

    if not LS_BIN.exists():
        reason = f"{LS_BIN} missing: `./dev.sh test` installs label-studio into .lsvenv"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI must run the real Label Studio test: {reason}")
        pytest.skip(reason)
    with start_label_studio(tmp_path_factory.mktemp("label-studio")) as server:
        yield server


@pytest.fixture(scope="session")
def tiny_detector_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Grounding DINO directory, as `download-detector` would leave one."""
    from .detector_support import build_tiny_detector

    return build_tiny_detector(tmp_path_factory.mktemp("detector") / "grounding-dino-tiny")


@pytest.fixture(scope="session")
def tiny_detector(tiny_detector_dir: Path):  # type: ignore[no-untyped-def]
    """Loaded through the production path."""
    from function.core.hf_detector import TransformersDetector

    return TransformersDetector.load(tiny_detector_dir, "cpu")


@pytest.fixture
def redis_server(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A real redis-server on a free loopback port (tests/redis_support.py)."""
    from .redis_support import redis_server as start

    with start(tmp_path) as server:
        yield server
