"""The contact sheet in docs/real-photos.md: what the shipped choi-tiny does with real photos.

One row per request: person photo | object photo | the two cut-outs the model got | stage-1 masks |
the image. The photos ship with scikit-image (`skimage.data`). Run from the repository root:

    python docs/real_photos_sheet.py --out docs/real-photos.png
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from PIL import Image
from skimage import data

from choi.pipelines.choi import CHOIPipeline

TILE = 160
REQUESTS = [  # (person photo, object photo, interaction, object box)
    ("astronaut", "motorcycle", "ride motorcycle", None),
    ("astronaut", "coffee", "drinking coffee from a cup", None),
    ("astronaut", "motorcycle", "pushing a motorbike", "0.05,0.1,0.95,0.95"),
]


def photos() -> dict[str, np.ndarray]:
    return {"astronaut": data.astronaut(), "motorcycle": data.stereo_motorcycle()[0], "coffee": data.coffee()}


def tile(image: np.ndarray) -> Image.Image:
    im = Image.fromarray(image).convert("RGBA")
    im.thumbnail((TILE, TILE))
    canvas = Image.new("RGBA", (TILE, TILE), (255, 255, 255, 255))
    canvas.alpha_composite(im, ((TILE - im.width) // 2, (TILE - im.height) // 2))
    return canvas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="docs/real-photos.png")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    pipe, images, rows, records = CHOIPipeline.from_pretrained("choi-tiny"), photos(), [], []
    for person, obj, interaction, box in REQUESTS:
        out = pipe(human=images[person], object=images[obj], interaction=interaction, object_box=box, seed=args.seed)
        tiles = [images[person], images[obj], out.references["human"], out.references["object"],
                 out.mask_preview(0), out.images[0]]  # fmt: skip
        rows.append([tile(t) for t in tiles])
        meta = out.metadata
        records.append({"person": person, "object": obj, "interaction": interaction, "object_box": box,
                        "drawn_as": meta["interaction_class"], "similarity": meta["interaction_similarity"],
                        "rules": {r: v["rule"] for r, v in meta["references"].items()}})  # fmt: skip
    sheet = Image.new("RGBA", (TILE * 6, TILE * len(rows)), (255, 255, 255, 255))
    for i, row in enumerate(rows):
        for j, t in enumerate(row):
            sheet.alpha_composite(t, (TILE * j, TILE * i))
    sheet.convert("RGB").save(args.out)
    print(json.dumps(records, indent=1))


if __name__ == "__main__":
    main()
