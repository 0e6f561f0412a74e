"""scripts/s3_server.py: a real SeaweedFS S3 server on 127.0.0.1 that enforces credentials, and
the repository's storage configuration (no credentials in git, links instead of copies)."""

from __future__ import annotations

import configparser
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import botocore.exceptions
import pytest

from helpers.paths import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "scripts"))
from s3_server import HOST, PORT_NAMES, Credentials, S3ServerError, SeaweedS3  # noqa: E402

CREDENTIAL_KEYS = {"access_key_id", "secret_access_key", "session_token", "credentialpath",
                   "profile", "password", "user"}


def _sockets_left(server: SeaweedS3) -> list[Path]:
    """The Unix sockets that weed names after its ports in /tmp."""
    return [path for port in server.ports.values()
            for path in Path("/tmp").glob(f"seaweedfs-*-{port}.sock")]


@pytest.mark.slow  # starts the S3 server
def test_every_port_is_distinct_and_bound_to_loopback(tmp_path: Path):
    server = SeaweedS3(tmp_path)
    assert len(set(server.ports.values())) == len(PORT_NAMES)
    command = server.command()
    assert f"-ip.bind={HOST}" in command and f"-ip={HOST}" in command
    assert "-master.telemetry=false" in command  # no report to the internet
    assert "-s3.autoCreateBucket=false" in command
    assert f"-s3.port={server.ports['s3']}" in command
    assert f"-master.port.grpc={server.ports['master.port.grpc']}" in command


@pytest.mark.slow  # starts the S3 server
def test_server_serves_signed_requests_only_and_stops(tmp_path: Path):
    with SeaweedS3(tmp_path / "s3", bucket="things") as server:
        client = server.client()
        client.put_object(Bucket="things", Key="a/b.txt", Body=b"hello")
        assert client.get_object(Bucket="things", Key="a/b.txt")["Body"].read() == b"hello"

        with pytest.raises(urllib.error.HTTPError) as anonymous:
            urllib.request.urlopen(f"{server.endpoint}/things/a/b.txt", timeout=5)
        assert anonymous.value.code == 403
        bad_secret = Credentials(server.credentials.access_key, "not-the-secret")
        with pytest.raises(botocore.exceptions.ClientError, match="SignatureDoesNotMatch"):
            server.client(bad_secret).list_objects_v2(Bucket="things")
        with pytest.raises(botocore.exceptions.ClientError, match="InvalidAccessKeyId"):
            server.client(Credentials.random()).list_objects_v2(Bucket="things")
        with pytest.raises(botocore.exceptions.ClientError, match="NoSuchBucket"):
            client.put_object(Bucket="not-created", Key="x", Body=b"x")
        port = server.ports["s3"]
    with socket.socket() as probe:
        assert probe.connect_ex((HOST, port)) != 0, "the S3 port still answers after stop()"
    assert not _sockets_left(server)


@pytest.mark.slow  # starts the S3 server
def test_restart_keeps_data_ports_and_credentials(tmp_path: Path):
    server = SeaweedS3(tmp_path / "s3").start()
    try:
        server.client().put_object(Bucket=server.bucket, Key="kept", Body=b"data")
        endpoint = server.endpoint
        server.kill()
        assert not _sockets_left(server), "a killed server's Unix sockets would block a restart"
        server.start()
        assert server.endpoint == endpoint
        assert server.client().get_object(Bucket=server.bucket, Key="kept")["Body"].read() \
            == b"data"
    finally:
        server.stop()


@pytest.mark.slow  # starts the S3 server
def test_a_port_in_use_fails_clearly(tmp_path: Path):
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        server = SeaweedS3(tmp_path / "s3", s3_port=taken.getsockname()[1])
        with pytest.raises(S3ServerError, match="weed mini exited|not ready"):
            server.start(timeout=5)


@pytest.mark.slow  # starts the S3 server
def test_command_line_start_env_stop(tmp_path: Path):
    script = REPO_ROOT / "scripts/s3_server.py"
    port = SeaweedS3(tmp_path / "probe").ports["s3"]
    root = tmp_path / "dev"

    def cli(*args: str) -> str:
        result = subprocess.run([sys.executable, str(script), *args, "--dir", str(root)],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    assert f"http://{HOST}:{port}" in cli("start", "--port", str(port))
    try:
        exports = dict(line.removeprefix("export ").split("=", 1)
                       for line in cli("env").splitlines())
        assert set(exports) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
        assert (root / "server.json").stat().st_mode & 0o077 == 0  # credentials: owner only
    finally:
        assert "stopped" in cli("stop")
    with socket.socket() as probe:
        assert probe.connect_ex((HOST, port)) != 0


def test_dvc_config_holds_no_credentials_and_config_local_is_ignored():
    config = configparser.ConfigParser()
    config.read(REPO_ROOT / ".dvc/config", encoding="utf-8")
    remotes = {section: dict(config[section]) for section in config.sections()
               if section.startswith("'remote")}
    assert "'remote \"s3\"'" in remotes and "'remote \"local\"'" in remotes
    assert remotes["'remote \"s3\"'"]["url"].startswith("s3://")
    for section, values in remotes.items():
        assert not CREDENTIAL_KEYS & set(values), f"{section} holds credentials"
    assert config["core"]["remote"] == "local"  # the default needs no server
    assert config["cache"]["type"].strip('"').split(",")[:2] == ["reflink", "hardlink"]
    ignored = subprocess.run(["git", "check-ignore", "-q", ".dvc/config.local"],
                             cwd=REPO_ROOT)
    assert ignored.returncode == 0, ".dvc/config.local must be ignored by git"
