"""Where the time of one request with a phone-sized background goes: imports, model load, the call, writing.

Makes a 6000x6000 (36 MP) JPEG from scikit-image's coffee, then, in this one process, times each phase of
``CHOIPipeline.from_pretrained("choi-tiny")`` + one image with a box + ``save``, and prints one JSON object
(wall and CPU seconds per phase, peak resident memory). Run it in a fresh process: the imports are phase one.

    python benchmarks/bench_big_background.py                 # the 36 MP background
    python benchmarks/bench_big_background.py --side 128      # the same request with a small background
"""

from __future__ import annotations

import time

START = time.perf_counter(), time.process_time()

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

from choi.pipelines.choi import CHOIPipeline  # noqa: E402
from choi.pipelines.request import GenerationRequest  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=6000, help="background side in pixels (default: 6000, 36 MP)")
    args = parser.parse_args()
    phases, mark = {}, list(START)

    def done(name: str) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        phases[name] = {"wall_s": round(wall - mark[0], 2), "cpu_s": round(cpu - mark[1], 2)}
        mark[:] = wall, cpu

    done("imports")
    with tempfile.TemporaryDirectory() as tmp:
        from PIL import Image
        from skimage import data

        background = Path(tmp) / "background.jpg"
        Image.fromarray(data.coffee()).resize((args.side, args.side), Image.BICUBIC).save(background, quality=90)
        mark[:] = time.perf_counter(), time.process_time()  # making the photo is not the request's time
        pipe = CHOIPipeline.from_pretrained("choi-tiny")
        done("load")
        request = GenerationRequest(human=EXAMPLES / "kick_ball_human.png", object=EXAMPLES / "ride_bicycle_object.png",
                                    interaction="ride bicycle", background=background, box=(0.2, 0.2, 0.8, 0.9),
                                    seed=0)  # fmt: skip
        out = pipe(request)
        done("call")
        out.save(Path(tmp) / "out")
        done("save")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    print(json.dumps({"side": args.side, "output": list(out.images[0].shape[:2]), "phases": phases,
                      "peak_rss_gib": round(peak, 2)}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
