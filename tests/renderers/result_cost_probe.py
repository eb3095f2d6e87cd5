"""CPU seconds of one ``imgproxy`` render, in this process, by result side and format (a
measurement, not a test): what ``DIPS_MAX_RESULT_DIMENSION`` saves (docs/HTTP.md).

    PYTHONPATH=. flock /tmp/dips-bench.lock python tests/renderers/result_cost_probe.py \\
        4096,5120,7071 png,webp,jpeg

The source is a 7,071 x 7,071 photo-like JPEG (50 MP, the workers' source limit); each
render is ``rs:fit:S:S`` in the format given, with the result limit off.
"""

from __future__ import annotations

import sys
import time

import renderers
from renderers import samples


def main() -> None:
    sides = [int(side) for side in sys.argv[1].split(",")]
    formats = sys.argv[2].split(",")
    renderers.configure(max_result_dimension=0)
    service = renderers.get("imgproxy")
    source = samples.photo_jpeg(7071, 7071)
    print(f"source: {len(source)} bytes", flush=True)
    for side in sides:
        for fmt in formats:
            cpu, wall = time.process_time(), time.monotonic()
            reply = service.render({"image": source, "format": fmt,
                                    "ops": {"resize": {"width": side, "height": side}}})
            print(f"{side} {fmt}: cpu {time.process_time() - cpu:.2f} s, wall "
                  f"{time.monotonic() - wall:.2f} s, {len(reply['image'])} bytes", flush=True)


if __name__ == "__main__":
    main()
