"""moto's S3 server on 127.0.0.1, as a real S3 HTTP endpoint for the remote tests and
benchmarks/remote_sweep.py, counting the requests it answers.

    python tests/s3_server.py PORT        # serves until killed

``start()`` runs it as a child process and returns a handle: its endpoint URL, the
storage_options that point s3fs at it (test credentials, never real ones), the
request counts by kind (``GET /_counts``: LIST, GET, HEAD, PUT, DELETE, POST), and
``pause()``/``resume()`` (SIGSTOP/SIGCONT: a store that stops answering, as a
network partition does, with the connections left hanging).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter

TEST_KEY, TEST_SECRET = "scoreviz-test-key", "scoreviz-test-secret-never-printed"


def _kind(environ) -> str:
    method = environ.get("REQUEST_METHOD", "")
    query = environ.get("QUERY_STRING", "")
    path = environ.get("PATH_INFO", "").strip("/")
    if method == "GET" and ("list-type" in query or "/" not in path):
        return "LIST"
    return method


def serve(port: int) -> None:
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import run_simple

    app = DomainDispatcherApplication(create_backend_app)
    counts, lock = Counter(), threading.Lock()

    def counting(environ, start_response):
        if environ.get("PATH_INFO") == "/_counts":
            with lock:
                body = json.dumps(counts).encode()
                if environ.get("REQUEST_METHOD") == "DELETE":
                    counts.clear()
            start_response("200 OK", [("Content-Type", "application/json")])
            return [body]
        with lock:
            counts[_kind(environ)] += 1
        return app(environ, start_response)

    run_simple("127.0.0.1", port, counting, threaded=True)


class S3Server:
    def __init__(self, process, port, check_credentials: bool = False):
        self.process, self.port = process, port
        self.endpoint = f"http://127.0.0.1:{port}"
        self.key, self.secret = TEST_KEY, TEST_SECRET
        self.check_credentials = check_credentials
        self._ready = process is None  # a handle to a server started elsewhere (a benchmark's worker)

    def ready(self, timeout: float = 30.0) -> "S3Server":
        """The server once it answers (launch() returns before: moto takes seconds to import)."""
        deadline = time.monotonic() + timeout
        while not self._ready:
            try:
                self.counts()
                if self.check_credentials:
                    self._make_user()
                self._ready = True
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("the moto S3 server did not start")
                time.sleep(0.1)
        return self

    def options(self) -> dict:
        """storage_options for s3fs: this server, the test credentials."""
        return {"key": self.key, "secret": self.secret, "endpoint_url": self.endpoint,
                "client_kwargs": {"region_name": "us-east-1"}}

    def env(self) -> dict:
        """The same as environment variables (the store's standard chain), for child processes."""
        return {"AWS_ACCESS_KEY_ID": self.key, "AWS_SECRET_ACCESS_KEY": self.secret,
                "AWS_ENDPOINT_URL_S3": self.endpoint, "AWS_ENDPOINT_URL": self.endpoint,
                "AWS_DEFAULT_REGION": "us-east-1"}

    def client(self, service="s3"):
        import boto3

        return boto3.client(service, endpoint_url=self.endpoint, aws_access_key_id=self.key,
                            aws_secret_access_key=self.secret, region_name="us-east-1")

    def make_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def _make_user(self):
        """With credentials checked: a user allowed everything, made with the server's first
        (unchecked) requests; its keys become the test credentials."""
        iam = self.client("iam")
        iam.create_user(UserName="scoreviz-test")
        iam.put_user_policy(UserName="scoreviz-test", PolicyName="all", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName="scoreviz-test")["AccessKey"]
        self.key, self.secret = key["AccessKeyId"], key["SecretAccessKey"]

    def counts(self, reset: bool = False) -> Counter:
        request = urllib.request.Request(f"{self.endpoint}/_counts", method="DELETE" if reset else "GET")
        with urllib.request.urlopen(request, timeout=10) as answer:
            return Counter(json.loads(answer.read()))

    def pause(self):  # the handle a worker process builds from the port has no process: never called there
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self):
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGCONT)

    def stop(self):
        if self.process.poll() is None:
            self.resume()
            self.process.kill()
        self.process.wait(10)


def launch(check_credentials: bool = False) -> S3Server:
    """The server in a child process on a free port of 127.0.0.1, not yet answering: its ready()
    waits for it (several launched at once start side by side). With ``check_credentials``,
    requests must be signed with the keys of a user it knows (the handle's options() and env()
    give them, once ready); by default moto accepts any keys."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = dict(os.environ)
    if check_credentials:
        env["INITIAL_NO_AUTH_ACTION_COUNT"] = "3"  # the requests of _make_user
    process = subprocess.Popen([sys.executable, os.path.abspath(__file__), str(port)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return S3Server(process, port, check_credentials)


def start(timeout: float = 30.0, check_credentials: bool = False) -> S3Server:
    """launch(), once the server answers."""
    return launch(check_credentials).ready(timeout)


if __name__ == "__main__":
    serve(int(sys.argv[1]))
