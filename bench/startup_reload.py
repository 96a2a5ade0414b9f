"""Time from `modelyard serve` to ready, and from saving the config to the
new config serving.

    .venv/bin/python bench/startup_reload.py [--runs 3]

Ready = "Server listening" printed, and /health shows every eager model
loaded. Reload = the file is saved (atomic rename) with one more model; done
when /health reports the new generation (new models are loaded before the
swap, so that is when they serve) and a chat request to the new model
succeeds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.conftest import ServerProcess, chat_model_toml  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    listening, ready, reload = [], [], []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "config.toml"
            path.write_text(chat_model_toml("smol-a"))
            started = time.perf_counter()
            server = ServerProcess(["-c", str(path), "--log-level", "warning"]).start()
            listening.append(time.perf_counter() - started)
            try:
                while True:
                    models = server.health()["models"]
                    if all(m["status"] == "loaded" for m in models.values()):
                        break
                    time.sleep(0.01)
                ready.append(time.perf_counter() - started)

                tmp = path.with_suffix(".new")
                tmp.write_text(chat_model_toml("smol-a") + chat_model_toml("smol-b"))
                saved = time.perf_counter()
                os.replace(tmp, path)
                while server.health()["config"]["generation"] < 2:
                    time.sleep(0.01)
                response = httpx.post(
                    f"{server.base_url}/v1/chat/completions",
                    json={"model": "smol-b", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1},
                    timeout=60,
                )
                assert response.status_code == 200, response.text
                reload.append(time.perf_counter() - saved)
            finally:
                server.stop()
    print(f"serve → listening: median {statistics.median(listening):.2f} s  (runs: {', '.join(f'{x:.2f}' for x in listening)})")
    print(f"serve → ready:     median {statistics.median(ready):.2f} s  (runs: {', '.join(f'{x:.2f}' for x in ready)})")
    print(f"save → serving:    median {statistics.median(reload):.2f} s  (runs: {', '.join(f'{x:.2f}' for x in reload)})")


if __name__ == "__main__":
    main()
