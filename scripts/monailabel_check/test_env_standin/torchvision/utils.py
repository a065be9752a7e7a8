"""TEST-ENVIRONMENT STAND-IN for the two ``torchvision.utils`` functions MONAI Label imports (see
``__init__.py``): importable, and an error if anything ever calls them."""


def make_grid(*args, **kwargs):
    raise RuntimeError("torchvision.utils.make_grid: test-environment stand-in, torchvision is not installed")


def save_image(*args, **kwargs):
    raise RuntimeError(
        "torchvision.utils.save_image: test-environment stand-in, torchvision is not installed"
    )
