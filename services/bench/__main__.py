"""`python -m services.bench model|decode|pipeline`: the benchmarks without the main CLI.

The main CLI imports every service's command module and the settings (pydantic-settings); this
entry point imports only the bench package, so `bench model` runs on a bare GPU machine that has
torch, numpy, safetensors, typer and rich but none of the service dependencies.
"""

from __future__ import annotations

import os
import sys

from schemas.errors import FusionwatchError
from services.bench.cli import bench_app


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # offline by design: never reach for a model hub
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        bench_app(prog_name="python -m services.bench")
    except FusionwatchError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
