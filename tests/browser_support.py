"""Support for the browser test: `dagster dev` in the background, its GraphQL API, headless Chromium.

Kept apart from the test so that a script can drive the same UI by hand:

    with DagsterDev(root, artifacts) as ui:
        print(ui.url)
"""

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

# Chromium as root needs --no-sandbox; the rest keeps it off the network (see ../shared/STACK.md).
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]

TERMINAL_RUN_STATUSES = {"SUCCESS", "FAILURE", "CANCELED"}
FAILED_RUN_STATUSES = {"FAILURE", "CANCELED", "CANCELING"}
TERMINAL_BACKFILL_STATUSES = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}
FAILED_BACKFILL_STATUSES = {"COMPLETED_FAILED", "FAILED", "FAILING", "CANCELED", "CANCELING"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _default_signals() -> None:
    # A child of a shell/pytest may inherit an ignored SIGINT; dagster dev then hangs on shutdown.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


class DagsterDev:
    """`dagster dev` on a free port with a fresh DAGSTER_HOME and CTR_HOME; stopped on exit, always."""

    def __init__(
        self, root: Path, log_path: Path, env: dict[str, str] | None = None, port: int | None = None
    ):
        self.root = root
        self.log_path = log_path
        self.extra_env = env or {}
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self._tmp: tempfile.TemporaryDirectory | None = None

    def __enter__(self) -> "DagsterDev":
        self._tmp = tempfile.TemporaryDirectory(prefix="ctr-browser-")
        tmp = Path(self._tmp.name)
        self.dagster_home = tmp / "dagster_home"
        self.ctr_home = tmp / "ctr_home"
        self.dagster_home.mkdir()
        self.ctr_home.mkdir()
        (self.dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        env = {
            **os.environ,
            "DAGSTER_HOME": str(self.dagster_home),
            "CTR_HOME": str(self.ctr_home),
            "CTR_SOURCE": "synthetic",
            "CTR_PROFILE": "tiny",
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
        }
        env.pop("CTR_MAPPING", None)
        dagster = self.root / ".venv" / "bin" / "dagster"
        exe = str(dagster) if dagster.exists() else shutil.which("dagster") or "dagster"
        cmd = [exe, "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(self.port)]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in __exit__
        try:
            self.proc = subprocess.Popen(
                cmd,
                cwd=self.root,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_default_signals,
            )
        except BaseException:
            self._cleanup()
            raise
        return self

    def wait_until_serving(self, timeout: float = 120.0) -> float:
        """Poll /server_info until the webserver answers; returns the seconds it took."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"dagster dev exited with {self.proc.returncode}; log {self.log_path}:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/server_info", timeout=2) as r:
                    if r.status == 200:
                        return time.monotonic() - started
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.5)
        raise TimeoutError(f"dagster dev not serving after {timeout:.0f} s; log:\n{self.log_tail()}")

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def graphql(self, query: str, variables: dict | None = None, timeout: float = 30.0) -> dict:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        req = urllib.request.Request(
            f"{self.url}/graphql", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=timeout) as r:
            payload = json.load(r)
        if payload.get("errors"):
            raise RuntimeError(f"GraphQL errors: {payload['errors']}")
        return payload["data"]

    def stop(self, timeout: float = 20.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGINT, timeout), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                proc.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        # the daemon and code servers share the group: make sure none outlives the webserver
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    def _cleanup(self) -> None:
        self._log.close()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __exit__(self, *exc) -> None:
        try:
            self.stop()
        finally:
            self._cleanup()


# --- GraphQL: the state of the backfills and runs ------------------------------------------------

BACKFILLS_QUERY = """
query Backfills {
  partitionBackfillsOrError(limit: 50) {
    __typename
    ... on PartitionBackfills { results { id status numPartitions isAssetBackfill error { message } } }
    ... on PythonError { message }
  }
}
"""

RUNS_QUERY = """
query Runs {
  runsOrError(limit: 500) {
    __typename
    ... on Runs { results { runId status tags { key value } } }
    ... on PythonError { message }
  }
}
"""

RUN_LOGS_QUERY = """
query RunLogs($runId: ID!) {
  logsForRun(runId: $runId, limit: 2000) {
    __typename
    ... on EventConnection {
      events {
        __typename
        ... on MessageEvent { message level stepKey }
        ... on ExecutionStepFailureEvent { error { message stack cause { message stack } } }
        ... on RunFailureEvent { pipelineRunFailureError: error { message } }
        ... on EngineEvent { engineError: error { message } }
      }
    }
    ... on PythonError { message }
  }
}
"""

ASSETS_QUERY = """
query Assets {
  assetNodes {
    assetKey { path }
    isMaterializable
    isPartitioned
    partitionStats { numMaterialized numPartitions numFailed }
    assetMaterializations(limit: 1) { runId }
  }
}
"""


def unmaterialized_assets(ui: DagsterDev) -> list[str]:
    """Materializable assets (or partitions of them) that have no materialization: the "all" that was not."""
    missing = []
    for node in ui.graphql(ASSETS_QUERY)["assetNodes"]:
        if not node["isMaterializable"]:
            continue
        key = "/".join(node["assetKey"]["path"])
        stats = node.get("partitionStats")
        if node["isPartitioned"] and stats:
            if stats["numMaterialized"] < stats["numPartitions"]:
                missing.append(f"{key} ({stats['numMaterialized']}/{stats['numPartitions']} partitions)")
        elif not node["assetMaterializations"]:
            missing.append(key)
    return sorted(missing)


def snapshot(ui: DagsterDev) -> tuple[list[dict], list[dict]]:
    """(backfills, runs) as the API reports them now."""
    data = ui.graphql(BACKFILLS_QUERY)["partitionBackfillsOrError"]
    if data["__typename"] != "PartitionBackfills":
        raise RuntimeError(f"backfills query: {data}")
    runs = ui.graphql(RUNS_QUERY)["runsOrError"]
    if runs["__typename"] != "Runs":
        raise RuntimeError(f"runs query: {runs}")
    return data["results"], runs["results"]


def failure_report(ui: DagsterDev, run: dict, max_chars: int = 3000) -> str:
    """A failed run's id, status and its error / step-failure messages."""
    lines = [f"run {run['runId']} status {run['status']}"]
    try:
        logs = ui.graphql(RUN_LOGS_QUERY, {"runId": run["runId"]})["logsForRun"]
        for e in logs.get("events", []):
            kind = e["__typename"]
            if kind == "ExecutionStepFailureEvent":
                err = e.get("error") or {}
                root = err.get("cause") or err  # Dagster wraps the asset's own exception
                lines.append(f"  step {e.get('stepKey')} failed: {e.get('message')}")
                lines.append("    " + (err.get("message") or "").strip())
                if root is not err:
                    lines.append("    caused by: " + (root.get("message") or "").strip())
                stack = "".join(root.get("stack") or [])[-1500:]
                if stack:
                    lines.append("    " + stack.rstrip().replace("\n", "\n    "))
            elif kind == "RunFailureEvent":
                err = e.get("pipelineRunFailureError") or {}
                lines.append(f"  run failure: {e.get('message')} {(err.get('message') or '').strip()}")
            elif kind == "EngineEvent" and e.get("level") == "ERROR":
                err = e.get("engineError") or {}
                lines.append(f"  engine error: {e.get('message')} {(err.get('message') or '').strip()}")
    except Exception as exc:  # the report must not hide the failure it reports
        lines.append(f"  (could not read the run's logs: {exc})")
    return "\n".join(lines)[:max_chars]
