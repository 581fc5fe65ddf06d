"""`make demo`: start the built-in simulator, run a real bulk update of samples/ against it
through the whole real path (Domain API -> OAuth token -> Users API), print the summary."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
#: The simulator's demo credentials (a fake server; nothing real is reached).
DEMO_CLIENT_ID = "demo-client"
DEMO_CLIENT_SECRET = "demo-secret"


def _start_simulator(port_file: Path) -> subprocess.Popen[bytes]:
    command = [
        sys.executable, "-m", "bulkusers", "simulate",
        "--port", "0", "--port-file", str(port_file),
        "--seed-file", str(SAMPLES / "seed.json"),
        "--latency-ms", "15", "--jitter-ms", "10",
        "--error-fraction", "0.02", "--other-admin-hz", "2",
    ]  # fmt: skip
    env = {**os.environ, "BULKUSERS_SIM_CLIENT_SECRET": DEMO_CLIENT_SECRET}
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)


def _wait_for_port(port_file: Path, simulator: subprocess.Popen[bytes]) -> int:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if simulator.poll() is not None:
            raise SystemExit(f"demo: the simulator exited with status {simulator.returncode}")
        text = port_file.read_text().strip() if port_file.exists() else ""
        if text:
            return int(text)
        time.sleep(0.05)
    raise SystemExit("demo: the simulator did not start within 20 s")


def main() -> int:
    """Run the demo; 0 when bulkusers behaved as expected."""
    changes = SAMPLES / "changes.csv"
    with tempfile.TemporaryDirectory(prefix="bulkusers-demo-") as tmp:
        port_file = Path(tmp) / "port"
        simulator = _start_simulator(port_file)
        try:
            port = _wait_for_port(port_file, simulator)
            url = f"http://127.0.0.1:{port}"
            print(f"demo: simulator of the LivePerson APIs at {url} (300 users, 15-25 ms latency,")
            print("      2% server errors, another admin editing 2 users a second)")
            command = [
                sys.executable, "-m", "bulkusers", "apply", str(changes),
                "--account", "123", "--csds-url", url,
                "--rate", "40", "--concurrency", "8", "--retry-delays", "0.5,1,1.5",
            ]  # fmt: skip
            print(
                "demo: $ LP_CLIENT_ID=... LP_CLIENT_SECRET=... bulkusers " + " ".join(command[3:])
            )
            print(flush=True)
            env = {
                **os.environ,
                "LP_CLIENT_ID": DEMO_CLIENT_ID,
                "LP_CLIENT_SECRET": DEMO_CLIENT_SECRET,
            }
            code = subprocess.call(command, env=env)
        finally:
            simulator.terminate()
            simulator.wait(timeout=10)
    print()
    if code in (0, 1):
        print("demo: done. The sample has a few deliberately bad rows, so they end `invalid`")
        print(
            f"      (exit {code}); every outcome is in {changes.with_name('changes.results.csv')}"
        )
        return 0
    print(f"demo: bulkusers exited with status {code}")
    return code


if __name__ == "__main__":
    sys.exit(main())
