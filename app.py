"""ThinkTree's web app entry point (Hugging Face Spaces runs this file): `python app.py`.

The app itself is built in app/ui.py; this file only creates it and launches it.
"""

import os

from app.ui import LAUNCH, build_demo

demo = build_demo()

if __name__ == "__main__":
    demo.launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        **LAUNCH,
    )
