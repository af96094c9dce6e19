"""Data augmentation for training a backbone on images: mirror, mild random resized crop, colour jitter.

Works on uint8 NHWC batches (the in-memory image cache) with PIL and NumPy, because torchvision
cannot be installed beside this torch. Crops are mild (80-100 % of the area) since a poster's
title and faces near its edges carry the genre; a strong crop would cut them away.
"""

from __future__ import annotations

import numpy as np

CROP_SCALE = (0.8, 1.0)  # fraction of the poster's area kept
CROP_RATIO = (0.9, 1.1)  # crop aspect relative to the poster's
JITTER = 0.2  # brightness, contrast and saturation each scaled by a factor in [1 - JITTER, 1 + JITTER]


def augment_batch(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A new uint8 (N, h, w, 3) batch: each image mirrored at random, cropped and resized back, colour-jittered."""
    return np.stack([augment_image(image, rng) for image in pixels])


def augment_image(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if rng.random() < 0.5:
        image = image[:, ::-1]
    image = random_resized_crop(image, rng)
    return colour_jitter(image, rng)


def random_resized_crop(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random crop of 80-100 % of the area, resized back to the image's own size."""
    from PIL import Image

    height, width = image.shape[:2]
    area = rng.uniform(*CROP_SCALE) * height * width
    ratio = rng.uniform(*CROP_RATIO) * width / height
    crop_w = int(np.clip(round(np.sqrt(area * ratio)), 1, width))
    crop_h = int(np.clip(round(np.sqrt(area / ratio)), 1, height))
    top = int(rng.integers(0, height - crop_h + 1))
    left = int(rng.integers(0, width - crop_w + 1))
    crop = Image.fromarray(np.ascontiguousarray(image[top : top + crop_h, left : left + crop_w]))
    return np.asarray(crop.resize((width, height), Image.BILINEAR))


def colour_jitter(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Brightness, contrast and saturation each scaled by a random factor near 1."""
    brightness, contrast, saturation = rng.uniform(1 - JITTER, 1 + JITTER, size=3)
    x = image.astype(np.float32) * brightness
    x = (x - x.mean()) * contrast + x.mean()
    grey = x @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    x = (x - grey[..., None]) * saturation + grey[..., None]
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)
