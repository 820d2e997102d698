import os
import signal
from pathlib import Path

import numpy as np
import pytest

from tests.support import models

# Python keeps SIGINT ignored when it starts with it ignored (the suite run under nohup, or as a shell's
# background job), and every process a test starts would inherit that: the tests that stop a run with SIGINT
# would wait on one that never stops. Take Ctrl-C back here, as an interactive run has it.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "data" / "images"
GRID = np.array([[0, 1, 2, 3], [3, 2, 1, 0]], np.uint8)  # a 4x2 grid of 4 classes


@pytest.fixture(autouse=True, scope="session")
def user_cache(tmp_path_factory):
    """The user cache folder (FP16 copies, engines, locks) of this test session: tests write neither into the
    checkout nor into the user's own cache."""
    folder = tmp_path_factory.mktemp("user-cache")
    saved = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(folder)
    yield folder
    if saved is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = saved


@pytest.fixture(autouse=True)
def library_defaults():
    """Each test starts as a fresh process would: in-process CLI runs leave no log handler or progress bars
    behind for the next (library) test."""
    import logging

    from segnet.progress import set_progress_factory

    yield
    logger = logging.getLogger("segnet")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    logger.setLevel(logging.NOTSET)
    set_progress_factory(None)


@pytest.fixture
def city() -> Path:
    return IMAGES / "city_0.jpg"


@pytest.fixture
def constant_net(tmp_path):
    """Factory: a network folder whose scores are ``scores`` for every image."""
    count = iter(range(1000))

    def make(scores, width=64, height=32, names=None, colors=None, **kwargs):
        folder = tmp_path / f"net{next(count)}"
        return models.write_network(folder, models.constant_model, names, colors,
                                    scores=np.asarray(scores, np.float32), width=width, height=height,
                                    **kwargs)

    return make


def one_hot(classes: np.ndarray, num_classes: int) -> np.ndarray:
    """Scores that make ``classes`` (``[gh, gw]``) the argmax: 1 for the class, 0 elsewhere."""
    return (np.arange(num_classes)[:, None, None] == classes[None]).astype(np.float32)
