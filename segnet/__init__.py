"""segnet: semantic segmentation with FCN-ResNet18 networks, exact to jetson-inference's segNet.

    from segnet import Segmenter
    with Segmenter() as net:            # the default network; or Segmenter("fcn-resnet18-cityscapes")
        result = net("city.jpg")        # a path, PIL image or uint8 RGB array
        result.class_map                # uint8 [grid h, grid w] class per cell
        result.overlay()                # uint8 [H, W, 3]

    from segnet.run import run          # folders, globs and videos, with events instead of printing
    run("images/", "out/", batch_size=4, on_event=print)
"""

__version__ = "0.2.0"

from .errors import OptionError, SegnetError, UsageError  # noqa: E402
from .options import Options  # noqa: E402


def __getattr__(name):  # Segmenter pulls in numpy and the backends: import it on first use
    if name in ("Segmenter", "Segmentation"):
        from . import segmenter

        return getattr(segmenter, name)
    raise AttributeError(f"module 'segnet' has no attribute {name!r}")


__all__ = ["OptionError", "Options", "Segmentation", "Segmenter", "SegnetError", "UsageError", "__version__"]
