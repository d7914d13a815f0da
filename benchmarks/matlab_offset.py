"""Where do the head points of a ShanghaiTech-layout set sit on the pixel grid? (`zoo.data.readers.MATLAB_OFFSET`)

Heads are close to left-right symmetric. For each head, the x of the vertical mirror axis that best matches
the image patch around the annotation (least squared difference between the patch and its mirror image,
searched in quarter pixels within +-3 px) is compared with the annotated x. Annotators' scatter averages
out over hundreds of heads; a systematic offset of the annotation convention does not. Heads whose best axis
lies on the search limit are left out (no clear symmetric structure).

    python -m benchmarks.matlab_offset [ROOT]   (default: the street set in ../shared/assets)
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import scipy.io

STREET = Path(__file__).resolve().parents[2] / "shared/assets/people_counting_custom/part_B"
HALF_WIDTH, HALF_HEIGHT = 8, 6  # of the compared window, in pixels
SHIFTS = np.arange(-3, 3.01, 0.25)


def mirror_axis(image: np.ndarray, x: float, y: float) -> float | None:
    """Best mirror axis near `x` (0-based pixel-centre coordinates: pixel j centred on j), or None."""
    h, w = image.shape
    offsets = np.arange(0.5, HALF_WIDTH + 0.5)
    rows = np.arange(round(y) - HALF_HEIGHT, round(y) + HALF_HEIGHT + 1).astype(np.float32)
    errors = []
    for shift in SHIFTS:
        axis = x + shift
        if axis - offsets[-1] < 0 or axis + offsets[-1] > w - 1 or rows[0] < 0 or rows[-1] > h - 1:
            return None
        right = cv2.remap(image, *np.meshgrid((axis + offsets).astype(np.float32), rows), cv2.INTER_LINEAR)
        left = cv2.remap(image, *np.meshgrid((axis - offsets).astype(np.float32), rows), cv2.INTER_LINEAR)
        errors.append(float(((right - left) ** 2).mean()))
    best = int(np.argmin(errors))
    return None if best in (0, len(SHIFTS) - 1) else x + SHIFTS[best]


def main(root: Path = STREET) -> None:
    found, integer = [], 0
    for mat in sorted(Path(root).glob("*_data/ground-truth/GT_*.mat")):
        image_file = mat.parent.parent / "images" / f"{mat.stem[3:]}.jpg"
        image = cv2.imread(str(image_file), cv2.IMREAD_GRAYSCALE | cv2.IMREAD_IGNORE_ORIENTATION).astype(np.float32)
        points = scipy.io.loadmat(str(mat))["image_info"][0, 0][0, 0][0]
        integer += int(np.isclose(points, np.round(points), atol=1e-6).all(1).sum())
        for x, y in points:
            # If the file holds 1-based pixel indices (MATLAB), the head's pixel is x - 1 in 0-based centres.
            axis = mirror_axis(image, x - 1, y - 1)
            if axis is not None:
                found.append(axis - (x - 1))
    found = np.array(found)
    print(f"{integer} annotated points with integer coordinates; {len(found)} heads with a clear mirror axis")
    error = found.std() / len(found) ** 0.5
    print(f"mirror axis - (x_file - 1): mean {found.mean():+.3f} px, standard error {error:.3f}")
    print("expected: 0 if the file holds 1-based pixel indices (MATLAB), +1 if 0-based ones")


if __name__ == "__main__":
    main(*map(Path, sys.argv[1:]))
