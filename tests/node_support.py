"""The official TypeScript SDK (``@nktkas/hyperliquid`` on Node with ``ws``) as a test client.

:func:`node_dir` installs the npm packages pinned in ``tests/node/package.json`` into
``.cache/node`` on first use (the npm registry must be reachable), under a file lock so
that parallel test workers install once. The client script is ``tests/node/hl_client.mjs``.
"""

import fcntl
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import trio

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "tests" / "node"
NODE_DIR = ROOT / ".cache" / "node"


def node_dir() -> Path:
    """Where the packages and the client script are (installed if they are not yet)."""
    if shutil.which("node") is None:
        raise RuntimeError("the TypeScript SDK tests need Node 20+ (`node` is not on PATH)")
    NODE_DIR.mkdir(parents=True, exist_ok=True)
    package = (SOURCE / "package.json").read_bytes()
    installed = NODE_DIR / "package.json"
    with open(NODE_DIR / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (
            not installed.exists()
            or installed.read_bytes() != package
            or not (NODE_DIR / "node_modules" / "@nktkas" / "hyperliquid").exists()
        ):
            installed.write_bytes(package)
            subprocess.run(
                ["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"],
                cwd=NODE_DIR,
                check=True,
                capture_output=True,
                timeout=600,
            )
        # ESM resolves packages next to the script: it runs from the install directory.
        # Replaced atomically: another worker's client may be starting from it.
        script = (SOURCE / "hl_client.mjs").read_bytes()
        target = NODE_DIR / "hl_client.mjs"
        if not target.exists() or target.read_bytes() != script:
            staged = NODE_DIR / "hl_client.mjs.new"
            staged.write_bytes(script)
            staged.replace(target)
    return NODE_DIR


async def run_ts_sdk(plan: dict[str, Any], *, limit: float = 60.0) -> dict[str, Any]:
    """Run the SDK client with ``plan`` (see hl_client.mjs); its JSON output."""
    directory = await trio.to_thread.run_sync(node_dir)
    with trio.fail_after(limit):
        result = await trio.run_process(
            ["node", str(directory / "hl_client.mjs"), json.dumps(plan)],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    text = result.stdout.decode()
    if not text.strip():
        raise AssertionError(f"the SDK client printed nothing: {result.stderr.decode()[-2000:]}")
    output: dict[str, Any] = json.loads(text.strip().splitlines()[-1])
    return output
