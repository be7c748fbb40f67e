"""A local stand-in for the Kaggle API that the real `kaggle` CLI can talk to in tests.

    with kaggle_standin(tmp_path) as api:
        subprocess.run([KAGGLE, "kernels", "status", "tester/some-kernel"], env=api.env)

How the CLI is pointed here: kaggle 2.x builds its client with an explicit environment,
taken only from its own flags (so KAGGLE_API_ENVIRONMENT=TEST is ignored and every call
would go to https://api.kaggle.com). The one value it does honour is
KAGGLE_API_ENVIRONMENT=LOCALHOST, which makes it call http://localhost/api/v1/<Service>/<Method>
(port 80). `api.env` sets that, and sets HTTP_PROXY to this server, so those calls, the
upload PUTs and the output downloads all arrive here; no root and no fixed port needed.
HTTPS_PROXY points here too, so a stray https call fails fast (recorded as "CONNECT ...")
instead of reaching the internet.
"""
import base64
import contextlib
import json
import os
import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

HOST = "127.0.0.1"
API_PREFIX = "/api/v1/"
# Environment variables that could make the CLI read real credentials or bypass the proxy.
_SCRUBBED = ("KAGGLE_API_TOKEN", "KAGGLE_CONFIG_DIR", "XDG_CONFIG_HOME", "KAGGLE_KERNEL_RUN_TYPE",
             "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy")


class KaggleStandin:
    """What the server answers (settable) and what it received (recorded)."""

    def __init__(self, home, port):
        self.port = port
        self.base_url = f"http://{HOST}:{port}"
        home = Path(home)
        home.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
        env.update(
            KAGGLE_API_ENVIRONMENT="LOCALHOST",
            KAGGLE_USERNAME="tester",
            KAGGLE_KEY="standin-key",
            HOME=str(home),
            HTTP_PROXY=self.base_url, http_proxy=self.base_url,
            HTTPS_PROXY=self.base_url, https_proxy=self.base_url,
        )
        self.env = env
        # Settable answers.
        self.users = {"tester": "standin-key"}  # legacy API keys: user -> key (the CLI sends them as basic auth)
        self.tokens = {}                    # access tokens: token -> user, answered by IntrospectToken
        self.push_error = None              # SaveKernel's `error`: the CLI prints "Kernel push error: ..." and exits 0
        self.invalid_sources = {}           # e.g. {"invalidCompetitionSources": [...]}: pushed, without them
        self.statuses = ["complete"]        # one per status call, the last one repeated: queued, running, complete,
                                            # error, cancel_requested, cancel_acknowledged
        self.failure_message = None         # shown by `kernels status` when set
        self.output_files = {}              # name -> bytes, served by `kernels output`
        self.kernel_log = None              # the run's log: `kernels logs` prints it, `kernels output` saves <slug>.log
        self.errors = {}                    # API method -> (HTTP status, message): that method fails so
        self.submissions = []               # dicts in ApiSubmission's JSON shape; a submit appends one
        self.submissions_per_day = 5        # for the "N submissions remaining today." line
        # Recorded requests.
        self.calls = []                     # (method_name, json_body), in order
        self.pushed = None                  # last SaveKernel body
        self.uploads = []                   # (file_name, bytes) per CreateSubmission
        self.submitted_messages = []        # the matching submission descriptions
        self._blobs = {}                    # upload token -> [file_name, bytes or None]
        self._lock = threading.Lock()

    # --- API methods: body dict in, response dict out ---

    def SaveKernel(self, body):
        if self.push_error:
            return {"error": self.push_error}
        self.pushed = body
        slug = body.get("slug") or f"tester/kernel-{body.get('id')}"
        version = sum(1 for name, call in self.calls if name == "SaveKernel" and call.get("slug") == slug)
        return {"ref": f"/code/{slug}", "url": f"https://www.kaggle.com/code/{slug}",
                "versionNumber": version, "kernelId": 1, **self.invalid_sources}

    def IntrospectToken(self, body):
        user = self.tokens.get(body.get("token"))
        return {"active": True, "username": user} if user else {"active": False}

    def GetKernelSessionStatus(self, body):
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        answer = {"status": status}
        if self.failure_message and status in ("error", "cancel_acknowledged"):
            answer["failureMessage"] = self.failure_message
        return answer

    def ListKernelSessionOutput(self, body):
        files = [{"fileName": name, "url": f"{self.base_url}/download/{quote(name)}"}
                 for name in self.output_files]
        answer = {"files": files}
        if self.kernel_log is not None:
            answer["log"] = self.kernel_log
        return answer

    def StartSubmissionUpload(self, body):
        token = f"blob-{len(self._blobs) + 1}"
        self._blobs[token] = [body.get("fileName", ""), None]
        return {"token": token, "createUrl": f"{self.base_url}/upload/{token}"}

    def CreateSubmission(self, body):
        token = body.get("blobFileTokens", "")
        if token not in self._blobs or self._blobs[token][1] is None:
            return None  # -> 404: nothing was uploaded under that token
        file_name, data = self._blobs[token]
        message = body.get("submissionDescription", "")
        self.uploads.append((file_name, data))
        self.submitted_messages.append(message)
        ref = max([int(s.get("ref") or 0) for s in self.submissions] + [1000]) + 1
        date = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        self.submissions.insert(0, {"ref": ref, "fileName": file_name, "date": date,
                                    "description": message, "status": "pending",
                                    "totalBytes": len(data)})
        competition = body.get("competitionName", "")
        return {"message": f"Successfully submitted to {competition}", "ref": ref}

    def GetSubmissionLimits(self, body):
        today = len(self.uploads)
        return {"numToday": today, "numTotal": today,
                "numAllowedNow": max(0, self.submissions_per_day - today)}

    def ListSubmissions(self, body):
        return {"submissions": self.submissions}

    API_METHODS = ("SaveKernel", "IntrospectToken", "GetKernelSessionStatus", "ListKernelSessionOutput",
                   "StartSubmissionUpload", "CreateSubmission", "GetSubmissionLimits", "ListSubmissions")


def kaggle_log(*lines, stream="stdout"):
    """A run's log as Kaggle keeps it: a JSON list of {stream_name, time, data} events, one per line printed."""
    return json.dumps([{"stream_name": stream, "time": 0.5 * index, "data": f"{line}\n"}
                       for index, line in enumerate(lines)])


class _Handler(BaseHTTPRequestHandler):
    """Serves POST /api/v1/<Service>/<Method>, GET /download/<name> and PUT /upload/<token>.

    Requests arrive either directly or through the proxy route, where the path is a full
    URL ("http://localhost/api/v1/..."); only its path part counts.
    """

    def log_message(self, *args):
        pass

    @property
    def api(self):
        return self.server.standin

    def _path(self):
        return unquote(urlsplit(self.path).path)

    def _body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status, payload, content_type="application/json"):
        data = json.dumps(payload).encode() if content_type == "application/json" else payload
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _not_found(self, what):
        self._send(404, {"code": 404, "message": f"kaggle stand-in: no such endpoint: {what}"})

    def _unknown(self, body=None):
        with self.api._lock:
            self.api.calls.append((f"{self.command} {self._path()}", body))
        self._not_found(f"{self.command} {self._path()}")

    def do_POST(self):
        path, raw = self._path(), self._body()
        if not path.startswith(API_PREFIX):
            return self._unknown(raw.decode(errors="replace"))
        method = path.rpartition("/")[2]
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = raw.decode(errors="replace")
        with self.api._lock:
            self.api.calls.append((method, body))
            known = method in KaggleStandin.API_METHODS and isinstance(body, dict)
            refused = self._refusal(method, body) if known else None
            answer = getattr(self.api, method)(body) if known and not refused else None
        if refused:
            return self._send(refused[0], {"code": refused[0], "message": refused[1]})
        if answer is None:
            return self._not_found(path)
        self._send(200, answer)

    def _refusal(self, method, body):
        """(HTTP status, message) when Kaggle would refuse this call: a set error, bad credentials, or a kernel
        version asked for as a bare number (the API wants "v<N>")."""
        if method in self.api.errors:
            return self.api.errors[method]
        authorization = self.headers.get("Authorization", "")
        if authorization.startswith("Basic "):
            user, _, key = base64.b64decode(authorization[6:]).decode().partition(":")
            if self.api.users.get(user) != key:
                return 401, "Unauthenticated"
        elif authorization.startswith("Bearer "):
            if method != "IntrospectToken" and authorization[7:] not in self.api.tokens:
                return 401, "Unauthenticated"
        if str(body.get("versionLabel", "v")).isdigit():
            return 404, f"no version {body['versionLabel']!r}: expected v<N>"
        return None

    def do_GET(self):
        path = self._path()
        name = path[len("/download/"):]
        if not path.startswith("/download/") or name not in self.api.output_files:
            return self._unknown()
        self._send(200, self.api.output_files[name], "application/octet-stream")

    def do_PUT(self):
        path, data = self._path(), self._body()
        token = path[len("/upload/"):]
        with self.api._lock:
            blob = self.api._blobs.get(token) if path.startswith("/upload/") else None
            if blob is not None:
                blob[1] = data
        if blob is None:
            return self._unknown(f"<{len(data)} bytes>")
        self._send(200, {})

    def do_CONNECT(self):  # an https call through the proxy: refused
        with self.api._lock:
            self.api.calls.append((f"CONNECT {self.path}", None))
        self._not_found(f"CONNECT {self.path}")


class _Server(ThreadingHTTPServer):
    allow_reuse_address = True
    daemon_threads = True


@contextlib.contextmanager
def kaggle_standin(home, port=0):
    """Run the stand-in on 127.0.0.1:`port` (0: any free port) for the `with` block.

    `home` is the folder the CLI gets as HOME (its config lands in home/.config/kaggle).
    """
    server = _Server((HOST, port), _Handler)
    server.standin = KaggleStandin(home, server.server_address[1])
    # shutdown() waits for the loop's next poll: every 0.05 s, not the default 0.5 s that each test would wait out.
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="kaggle-standin",
                              daemon=True)
    thread.start()
    try:
        yield server.standin
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
