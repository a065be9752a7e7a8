"""TEST-ENVIRONMENT STAND-IN, not torchvision; never shipped with the product.

`make monailabel-check` puts this folder on PYTHONPATH only where no torchvision build matches the
installed CPU torch (PyPI's torchvision does not import beside it on the project's CPU machines).
MONAI Label imports two functions at module level (``torchvision.utils.make_grid`` and ``save_image``,
for DeepEdit's and the pathology app's image logging); this bundle's inference and training never call
them. With a real torchvision installed, the check does not use this folder.
"""
