"""ctr-image: the `image_cnn` image encoder plugin for ctr-dagster."""

from ctr_image.encoder import ImageCnnConfig, ImageCnnEncoder

__all__ = ["ImageCnnConfig", "ImageCnnEncoder"]
