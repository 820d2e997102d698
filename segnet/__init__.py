"""segnet: semantic segmentation with FCN-ResNet18 networks, exact to jetson-inference's segNet.

    from segnet import Segmenter
    with Segmenter() as net:            # the default network; or Segmenter("fcn-resnet18-cityscapes")
        result = net("city.jpg")        # a path, PIL image or uint8 RGB array
        result.class_map                # uint8 [grid h, grid w] class per cell
        result.overlay()                # uint8 [H, W, 3]
"""

__version__ = "0.1.0"

from .errors import SegnetError, UsageError  # noqa: E402


def __getattr__(name):  # Segmenter pulls in numpy and the backends: import it on first use
    if name in ("Segmenter", "Segmentation"):
        from . import segmenter

        return getattr(segmenter, name)
    raise AttributeError(f"module 'segnet' has no attribute {name!r}")


__all__ = ["Segmenter", "Segmentation", "SegnetError", "UsageError", "__version__"]
