"""Guest images: recipes (images/<name>/recipe.toml + overlay/) and the cache of built images.

A built image lives in ``<cache>/images/<name>-<digest>/``: a read-only raw ext4 base
(``rootfs.img``), files extracted from the tree (hypervisor, kernel, initramfs) and a
``manifest.json``. The digest hashes every input of the recipe (recipe, overlay files,
guest programs, the client public key, the builder version), so an image is rebuilt
exactly when one of them changes. Host keys are generated at build and recorded in the
manifest; the harness pins them and never accepts an unknown key.
"""

from ..progress import Progress
from .build import apt_sources, build_image
from .built import BuiltImage, ImagePair
from .recipe import BUILDER_VERSION, IMAGE_NAMES, Recipe
from .store import CLIENT_KEY, ImageStore

__all__ = ["BUILDER_VERSION", "CLIENT_KEY", "IMAGE_NAMES", "BuiltImage", "ImagePair", "ImageStore", "Progress",
           "Recipe", "apt_sources", "build_image"]
