"""Start the vision3d Gradio app: ``python apps/gradio_app.py [--host H] [--port P]``.

Same as ``vision3d app``; the app itself is :mod:`vision3d.app`.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from vision3d.app import launch  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description="vision3d: photos to 3D in the browser")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (0.0.0.0 to share on your network)")
    p.add_argument("--port", type=int, default=7860)
    args = p.parse_args()
    launch(host=args.host, port=args.port)


if __name__ == "__main__":
    main()
