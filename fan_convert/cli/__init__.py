"""The ``fan-convert`` command line.

    fan-convert pretrained.pt --frames 4 8 16 --arch timm:resnet50 --temporal tsm --num-classes 174
    fan-convert specialize model.safetensors --frames 8 -o plain8.safetensors
    fan-convert inspect timm:resnet50 --targets paper
"""


from . import convert, deploy, train  # noqa: F401  (registers the commands on the app)
from ._app import app, cli_args, main

__all__ = ["app", "cli_args", "main"]
