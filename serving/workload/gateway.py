"""The API-key gateway in front of `trtllm-serve`: an nginx sidecar configuration.

`trtllm-serve` (TensorRT-LLM 1.2) has no authentication at all, so every server pod runs nginx
beside it. nginx listens on the port the Service targets, answers `GET /health` without a key (the
load balancer's health check), and passes the OpenAI routes (`OPENAI_ROUTES`, each with its one
method) to `trtllm-serve` on loopback only when the request carries `Authorization: Bearer <key>`
with a key from the key-map file. Every other method and path gets a 404 from nginx itself:
trtllm-serve's internal routes (`/metrics`, `/release_memory`, ...) never reach the server.

Two files, two Kubernetes objects:

* `nginx.conf` (from `render_nginx_conf`) holds no secret and lives in a ConfigMap.
* the key map (from `render_api_key_map`) holds the keys and lives in a Secret; nginx.conf only
  `include`s it by path.

This module is plain Python (no Pulumi) so that the tests can render the very same text and run
Debian's nginx on it in front of a real OpenAI-compatible server.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

# --- The sidecar container ---------------------------------------------------------------------

# nginx's own unprivileged image: it runs as uid/gid 101 (`USER 101` in its Dockerfile), its
# stock configuration listens on 8080 and keeps its pid and temp files under /tmp, so it needs no
# root and no capability. 1.30.4 is the current stable line's release that the image repository
# (nginx/docker-nginx-unprivileged, stable/alpine*/Dockerfile: NGINX_VERSION=1.30.4, UID=101,
# EXPOSE 8080) builds and that public Dockerfiles pin as `nginxinc/nginx-unprivileged:1.30.4-alpine`.
# Pinned to an exact release: a sidecar that changes under a running stack is a silent upgrade.
GATEWAY_IMAGE_NGINX_VERSION = "1.30.4"
GATEWAY_IMAGE = f"docker.io/nginxinc/nginx-unprivileged:{GATEWAY_IMAGE_NGINX_VERSION}-alpine"
GATEWAY_RUN_AS_USER = 101
GATEWAY_RUN_AS_GROUP = 101

# The tests run Debian 12's nginx (1.22); the rendered configuration only uses directives that
# both 1.22 and 1.30 accept, so a config that passes the tests here also loads in the image.

# Where the pod mounts things. nginx.conf replaces the image's own file through a subPath mount of
# the ConfigMap. The key map is a whole Secret volume mounted as a directory, NOT a subPath: the
# kubelet refreshes directory-mounted Secrets in place, subPath mounts never.
GATEWAY_CONFIG_MOUNT_PATH = "/etc/nginx/nginx.conf"
GATEWAY_CONFIG_MAP_KEY = "nginx.conf"
GATEWAY_API_KEYS_DIR = "/etc/nginx/api-keys"
GATEWAY_API_KEYS_SECRET_KEY = "api-keys.map"
GATEWAY_API_KEYS_PATH = f"{GATEWAY_API_KEYS_DIR}/{GATEWAY_API_KEYS_SECRET_KEY}"
# The endpoint's certificate and key: a `kubernetes.io/tls` Secret mounted as a directory (so the
# kubelet refreshes a renewed certificate in place, as for the key map).
GATEWAY_TLS_DIR = "/etc/nginx/tls"
GATEWAY_TLS_CERTIFICATE_PATH = f"{GATEWAY_TLS_DIR}/tls.crt"
GATEWAY_TLS_KEY_PATH = f"{GATEWAY_TLS_DIR}/tls.key"
# The ports the gateway listens on: 8443 for TLS, 8080 for plain HTTP (only when a stack asks).
GATEWAY_TLS_PORT = 8443
GATEWAY_PLAIN_PORT = 8080
# Protocols a client may speak: TLS 1.2 for older clients, 1.3 for the rest; nothing older.
GATEWAY_TLS_PROTOCOLS = ("TLSv1.2", "TLSv1.3")
# A memory-backed emptyDir here lets the container run with a read-only root filesystem.
GATEWAY_TMP_DIR = "/tmp"

# --- Metrics (read by the pod's metrics exporter, serving/observability/exporter.py) ---------------

# nginx OSS has no Prometheus module, so the gateway's series are made by the exporter beside it,
# from two loopback inputs. Neither is a pod port: the exporter serves the series on its own 9109.
# 1. One compact JSON line per request (route, status, key fingerprint, duration), sent as syslog
#    over UDP to the exporter (`access_log syslog:`), besides the stdout access log. UDP: nginx
#    never waits for the exporter, and a missing exporter costs the gateway nothing.
GATEWAY_METRICS_SYSLOG_PORT = 5514
GATEWAY_METRICS_SYSLOG_SERVER = f"127.0.0.1:{GATEWAY_METRICS_SYSLOG_PORT}"
# The syslog tag the exporter expects before the JSON (nginx: `tag=`; letters, digits, '_').
GATEWAY_METRICS_SYSLOG_TAG = "gateway"
# 2. nginx's stub_status (connections being read, written, idle) on a loopback-only listener.
GATEWAY_STATUS_PORT = 8081
GATEWAY_STATUS_PATH = "/stub_status"
GATEWAY_STATUS_URL = f"http://127.0.0.1:{GATEWAY_STATUS_PORT}{GATEWAY_STATUS_PATH}"
# The route label's values: the allowlisted paths (below) and this one for every other path.
OTHER_ROUTE_LABEL = "other"

# `daemon off;` is given on the command line, not in the file, so the same file also serves the
# test runner and `nginx -t` (nginx rejects the directive twice).
GATEWAY_NGINX_COMMAND = ("nginx", "-c", GATEWAY_CONFIG_MOUNT_PATH, "-g", "daemon off;")
# How often the entrypoint looks at the key map and the certificate. The kubelet itself takes up
# to a minute or two to refresh a mounted Secret, so polling faster gains nothing.
KEY_MAP_POLL_SECONDS = 30

# --- Sizing ------------------------------------------------------------------------------------

# The longest prompt the server accepts: max_seq_len (prompt + completion) is 98304 tokens.
MAX_PROMPT_TOKENS = 98304
# Bytes of request body per prompt token, in the worst realistic case. English averages about
# 4 bytes a token, but clients serialise JSON with non-ASCII escaped (`\uXXXX`, 6 bytes a
# character; Python's json.dumps does so by default) and a token can span several such
# characters: 32 bytes covers a token of five escaped characters.
WORST_CASE_BODY_BYTES_PER_TOKEN = 32
# Room for the chat scaffolding around the text: roles, tool schemas, sampling parameters.
REQUEST_ENVELOPE_BYTES = 1024 * 1024
# 98304 × 32 B + 1 MiB = 4 MiB. nginx's default (1 MiB) leaves about 10 bytes a token: enough
# for English, not for a long escaped non-Latin prompt with its chat history. Far more than 4 MiB
# would only let a client make nginx and the server read junk that cannot be a valid prompt.
CLIENT_MAX_BODY_BYTES = MAX_PROMPT_TOKENS * WORST_CASE_BODY_BYTES_PER_TOKEN + REQUEST_ENVELOPE_BYTES

# trtllm-serve runs uvicorn with a 5 s keep-alive (TIMEOUT_KEEP_ALIVE in
# tensorrt_llm/serve/openai_server.py). nginx must drop idle upstream connections before uvicorn
# does, or it may send a request down a connection that uvicorn is closing (a spurious 502).
UPSTREAM_KEEPALIVE_IDLE_SECONDS = 4

# --- Routes ------------------------------------------------------------------------------------

# The only (method, path) pairs that reach trtllm-serve with a key: the OpenAI API that
# trtllm-serve 1.2.1 serves (tensorrt_llm/serve/openai_server.py, register_routes). Matched
# exactly (`location =`) and proxied to the same canonical path, so no spelling of a path that
# nginx normalises differently from uvicorn (`//`, `/./`, `/x/../`, `%2F`) can reach another route.
# Not here: `GET /v1/models/<id>` (trtllm-serve 1.2.1 has no such route) and
# `GET|DELETE /v1/responses/<id>` (stored responses, readable and deletable by any key holder
# since the gateway has one shared tenant; nothing in this stack uses them).
OPENAI_ROUTES: tuple[tuple[str, str], ...] = (
    ("GET", "/v1/models"),
    ("POST", "/v1/completions"),
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/responses"),
)
# The load balancer's health check, open without a key.
HEALTH_ROUTE = ("GET", "/health")

# --- API keys ----------------------------------------------------------------------------------

MIN_API_KEY_LENGTH = 32
MAX_API_KEY_LENGTH = 512
# The base64url alphabet: what `secrets.token_urlsafe` and random-password generators without
# special characters produce. None of these characters means anything to nginx's parser (no
# quotes, `;`, braces, `$`, whitespace) or to a PCRE pattern outside a character class, so a key
# can be written into the map as a literal regular expression without escaping.
API_KEY_PATTERN = re.compile(r"[A-Za-z0-9_-]+")

# The nginx variable that the key map sets: the matching key's fingerprint, or "" for no match.
API_KEY_FINGERPRINT_VARIABLE = "$api_key_fingerprint"


# An IPv4 address and a UDP port: nothing nginx would resolve, nothing that could end the directive.
_IPV4_AND_PORT = re.compile(r"(?:\d{1,3}\.){3}\d{1,3}:[1-9]\d{0,4}")


class ApiKeyError(ValueError):
    """An API key that cannot go into the key map. The message never contains the key."""


@dataclass(frozen=True)
class GatewaySettings:
    """Everything that differs between the pod and a test prefix; the rest is fixed policy."""

    # A non-root process cannot bind below 1024: 8443 (TLS) or 8080 (plain HTTP).
    listen_port: int = GATEWAY_TLS_PORT
    # "" listens on every interface (the pod: the load balancer targets the pod IP); tests give
    # 127.0.0.1 so nothing outside the machine can reach them.
    listen_address: str = ""
    # trtllm-serve in the same pod, reached over loopback.
    upstream_host: str = "127.0.0.1"
    upstream_port: int = 8000
    api_key_map_path: str = GATEWAY_API_KEYS_PATH
    # The endpoint's certificate (PEM, the leaf first, then any intermediates) and its key; both
    # empty for plain HTTP, which a stack must ask for explicitly (endpointPlainHttp).
    tls_certificate_path: str = GATEWAY_TLS_CERTIFICATE_PATH
    tls_key_path: str = GATEWAY_TLS_KEY_PATH
    pid_path: str = f"{GATEWAY_TMP_DIR}/nginx.pid"
    # Directory for nginx's temp files (client bodies, proxy spill-over); must be writable.
    temp_dir: str = GATEWAY_TMP_DIR
    # /dev/stdout lands in the container log; tests point it at a file they read.
    access_log_path: str = "/dev/stdout"
    error_log_path: str = "stderr"
    # A sidecar beside a GPU server needs little CPU; "auto" would start one worker per core of
    # the node (192 on a p5.48xlarge) whatever the container's CPU limit.
    worker_processes: int = 2
    # Connections one worker holds at once, client and upstream ones together (a proxied stream
    # takes two). A pod serves at most max_batch_size (64) streams plus a queue, so legitimate
    # traffic needs a few hundred; 8192 per worker (16384 for the pod) lets the gateway hold a
    # few thousand idle or half-open connections, such as a scan or a slow-header flood, and
    # still have room for real clients. Each idle connection costs about 1-2 KiB of nginx memory
    # (connection structures preallocated: about 0.5 KiB each, 4 MiB per worker), well inside
    # the container's 256 MiB.
    worker_connections: int = 8192
    # Open-file limit each worker sets for itself (setrlimit, soft and hard). Every connection is
    # one descriptor, plus a few for logs and listeners: twice worker_connections leaves ample
    # room. Without it the workers would keep the container's soft limit, which containerd 2.x
    # sets to 1024 (1024:524288, containerd PR #8924): about 1000 connections. An unprivileged
    # process may raise its soft limit only up to its hard limit, so this must not exceed the
    # container's hard RLIMIT_NOFILE (containerd: 524288, older setups 1048576; this test
    # machine: 20000). If it did, the worker would log "setrlimit(RLIMIT_NOFILE) failed" and keep
    # its old limit; the tests check that the workers really get it.
    worker_rlimit_nofile: int = 16384
    # Keyed requests in progress at once from one client address (limit_conn: nginx counts a
    # connection only once its request header has been read and the key accepted, so idle,
    # half-open and 401/404 connections are not counted; those are bounded by the timeouts
    # below). 256 = 4 replicas per p5 node x max_batch_size 64: a single client that keeps a
    # whole node's batch busy, even if kube-proxy lands all of it on this one pod, stays under
    # the limit; more concurrent requests would only queue in trtllm-serve. The key is the
    # client's own address: the NLB (instance targets, externalTrafficPolicy Local) preserves it.
    # With IP targets and client-IP preservation off, the address would be the NLB's own and the
    # limit would apply to all clients behind one NLB node together: raise it then.
    limit_conn_per_address: int = 256
    # Shared memory for limit_conn's per-address counters: about 64 bytes per address, so 4 MiB
    # hold some 64000 addresses, four times as many connections as the workers can hold at once.
    # When the zone is full every new request is refused, so it must never fill before
    # worker_connections does.
    limit_conn_zone_megabytes: int = 4
    # Time a client has to send its whole request line and headers (nginx counts from the first
    # byte, or from accept for a new connection; it is not reset per byte). An OpenAI client sends
    # them in one packet; 10 s covers a slow mobile link and sheds slow-header clients
    # (slowloris) and connections opened without a request.
    client_header_timeout_seconds: int = 10
    # Longest silence between two reads of a request body. A client uploading a prompt is never
    # silent for long; one that stops mid-body holds a connection (and, unbuffered, an upstream
    # connection) for nothing.
    client_body_timeout_seconds: int = 30
    # How long an idle keep-alive connection of a keyed client stays open. nginx's default; longer
    # than the idle expiry of client pools (httpx, used by the OpenAI SDK: 5 s), so a pooled
    # connection is closed by the client, not raced by nginx. 401 and 404 answers close their
    # connection at once instead (keepalive_timeout 0 in their locations).
    keepalive_timeout_seconds: int = 75
    # After an answer that leaves part of the request unread (a 401 or 404 to a request with a
    # body), nginx reads and discards what the client still sends so that the client sees the
    # answer instead of a reset, but for at most lingering_time in total, waiting at most
    # lingering_timeout for each packet. 10 s reads a 4 MiB body at 3.2 Mbit/s; a client that
    # trickles is dropped after 2 s of silence.
    lingering_time_seconds: int = 10
    lingering_timeout_seconds: int = 2
    client_max_body_bytes: int = CLIENT_MAX_BODY_BYTES
    # Longest silence between two reads from trtllm-serve. A streamed response is never silent
    # for long, but a non-streamed one is silent until the whole answer exists: 90k tokens at
    # 25 tokens/s under full load is an hour.
    upstream_read_timeout_seconds: int = 3600
    # Longest silence while nginx writes the request to trtllm-serve, or the response to a slow
    # client: minutes, since both sides are alive but may be busy.
    upstream_send_timeout_seconds: int = 300
    client_send_timeout_seconds: int = 300
    upstream_connect_timeout_seconds: int = 5
    # The load balancer's health check must get an answer fast: a hung server is an unhealthy one.
    health_timeout_seconds: int = 5
    # On SIGQUIT (the image's STOPSIGNAL) nginx stops accepting and lets running streams finish
    # for up to this long; the pod's terminationGracePeriodSeconds must be longer.
    shutdown_timeout_seconds: int = 600
    # Where nginx sends each request's metrics line (syslog over UDP, an IPv4 address and port):
    # the pod's metrics exporter (`--gateway-syslog`). "" sends none. The line holds the route
    # (an allowlisted path or "other"), the status, the key's fingerprint and the duration: never
    # the key, the query string or a path the client chose.
    metrics_syslog_server: str = GATEWAY_METRICS_SYSLOG_SERVER
    # nginx's stub_status on 127.0.0.1:<this port> only (never the pod IP), for the exporter's
    # `--gateway-status-url`; 0 leaves the listener out.
    status_port: int = GATEWAY_STATUS_PORT

    def __post_init__(self) -> None:
        for name in ("listen_port", "upstream_port"):
            port = getattr(self, name)
            if not 1 <= port <= 65535:
                raise ValueError(f"GatewaySettings.{name}={port} is not a TCP port; use 1..65535")
        if not 0 <= self.status_port <= 65535 or self.status_port in (self.listen_port, self.upstream_port):
            raise ValueError(
                f"GatewaySettings.status_port={self.status_port} must be 0 (off) or a TCP port other "
                "than the listener's and the upstream's"
            )
        if self.metrics_syslog_server and not _IPV4_AND_PORT.fullmatch(self.metrics_syslog_server):
            raise ValueError(
                f"GatewaySettings.metrics_syslog_server={self.metrics_syslog_server!r} must be an "
                "IPv4 address and a port, such as 127.0.0.1:5514, or empty for none"
            )
        for name in (
            "worker_processes",
            "worker_connections",
            "worker_rlimit_nofile",
            "limit_conn_per_address",
            "limit_conn_zone_megabytes",
            "client_header_timeout_seconds",
            "client_body_timeout_seconds",
            "keepalive_timeout_seconds",
            "lingering_time_seconds",
            "lingering_timeout_seconds",
            "client_max_body_bytes",
            "upstream_read_timeout_seconds",
            "upstream_send_timeout_seconds",
            "client_send_timeout_seconds",
            "upstream_connect_timeout_seconds",
            "health_timeout_seconds",
            "shutdown_timeout_seconds",
        ):
            value = getattr(self, name)
            if value < 1:
                raise ValueError(f"GatewaySettings.{name}={value} must be a positive integer")
        if bool(self.tls_certificate_path) != bool(self.tls_key_path):
            raise ValueError(
                "GatewaySettings.tls_certificate_path and tls_key_path go together: set both for "
                "TLS, or neither for plain HTTP"
            )
        tls_paths = ("tls_certificate_path", "tls_key_path") if self.tls else ()
        for name in (
            "upstream_host",
            "api_key_map_path",
            *tls_paths,
            "pid_path",
            "temp_dir",
            "access_log_path",
            "error_log_path",
        ):
            value = getattr(self, name)
            # Each of these lands as one bare nginx token: whitespace, quotes, `;` or braces would
            # change the configuration's structure.
            if not value or re.search(r"[\s;{}'\"$#]", value):
                raise ValueError(
                    f"GatewaySettings.{name}={value!r} must be a non-empty path or host without "
                    "whitespace, quotes, '$', '#', ';' or braces"
                )
        if self.listen_address and re.search(r"[\s;{}'\"$#]", self.listen_address):
            raise ValueError(
                f"GatewaySettings.listen_address={self.listen_address!r} must be an address such "
                "as 127.0.0.1, or empty for every interface"
            )
        if self.worker_rlimit_nofile < self.worker_connections:
            raise ValueError(
                f"GatewaySettings.worker_rlimit_nofile={self.worker_rlimit_nofile} is below "
                f"worker_connections={self.worker_connections}: each connection is an open file"
            )
        if self.lingering_timeout_seconds > self.lingering_time_seconds:
            raise ValueError(
                f"GatewaySettings.lingering_timeout_seconds={self.lingering_timeout_seconds} "
                f"exceeds lingering_time_seconds={self.lingering_time_seconds}"
            )
        if self.upstream_read_timeout_seconds < self.upstream_connect_timeout_seconds:
            raise ValueError(
                "GatewaySettings.upstream_read_timeout_seconds="
                f"{self.upstream_read_timeout_seconds} is shorter than the connect timeout "
                f"({self.upstream_connect_timeout_seconds}); long generations need minutes"
            )

    @property
    def tls(self) -> bool:
        return bool(self.tls_certificate_path)

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def listen(self) -> str:
        address = (
            f"{self.listen_address}:{self.listen_port}" if self.listen_address else str(self.listen_port)
        )
        return f"{address} ssl" if self.tls else address

    @property
    def watched_paths(self) -> tuple[str, ...]:
        """The mounted Secret files whose change makes the entrypoint reload nginx."""
        tls = (self.tls_certificate_path, self.tls_key_path) if self.tls else ()
        return (self.api_key_map_path, *tls)


def plain_http_gateway() -> GatewaySettings:
    """The pod's gateway for a stack that explicitly asked for plain HTTP."""
    return GatewaySettings(listen_port=GATEWAY_PLAIN_PORT, tls_certificate_path="", tls_key_path="")


# --- Keys --------------------------------------------------------------------------------------


def api_key_fingerprint(api_key: str) -> str:
    """A short, non-secret name for a key: what the access log records and rotation tracks.

    48 bits of a SHA-256 over a key of at least 192 random bits tells nothing about the key,
    yet tells an operator whether clients still use the old key before it is removed.
    """
    return "sha256:" + hashlib.sha256(api_key.encode("ascii")).hexdigest()[:12]


def validate_api_key(api_key: str, position: int) -> None:
    """Raise ApiKeyError naming the key's position and the problem, never the key."""
    where = f"API key #{position + 1}"
    if not isinstance(api_key, str):
        raise ApiKeyError(f"{where} is a {type(api_key).__name__}, not a string")
    if len(api_key) < MIN_API_KEY_LENGTH:
        raise ApiKeyError(
            f"{where} has {len(api_key)} characters; at least {MIN_API_KEY_LENGTH} are needed "
            "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    if len(api_key) > MAX_API_KEY_LENGTH:
        raise ApiKeyError(f"{where} has {len(api_key)} characters; at most {MAX_API_KEY_LENGTH} are accepted")
    if not API_KEY_PATTERN.fullmatch(api_key):
        bad = sorted({c for c in api_key if not API_KEY_PATTERN.fullmatch(c)})
        described = ", ".join(_describe_character(c) for c in bad)
        raise ApiKeyError(
            f"{where} contains {len(bad)} disallowed character kind(s) ({described}); only "
            "letters, digits, '-' and '_' (the base64url alphabet) can be used"
        )


def _describe_character(character: str) -> str:
    # A disallowed character is named by kind or code point: quoting it could leak part of a key
    # only if keys were made of such characters, which is exactly what is being refused.
    if character.isspace():
        return f"whitespace U+{ord(character):04X}"
    return f"U+{ord(character):04X}"


def render_api_key_map(api_keys: Sequence[str]) -> str:
    """The key-map file: one line per key, included inside nginx.conf's `map` block.

    Each line is a case-sensitive regular expression (`~`) over the whole Authorization header.
    A plain string entry would not do: nginx matches map strings case-insensitively, which
    would accept a key with any letter's case flipped. The scheme word itself is matched
    case-insensitively, as HTTP says auth schemes are. Several keys may be valid at once, so
    a new key can be added before the old one is withdrawn.
    """
    if isinstance(api_keys, str):
        raise ApiKeyError("api_keys must be a sequence of keys, not one string")
    if not api_keys:
        raise ApiKeyError("api_keys is empty: at least one key is needed, or nothing could pass")
    seen: dict[str, int] = {}
    lines = [
        "# API keys for the gateway (one line per key; several at once during rotation).",
        "# Generated; mounted from a Kubernetes Secret. Value: the key's fingerprint for the log.",
    ]
    for position, api_key in enumerate(api_keys):
        validate_api_key(api_key, position)
        if api_key in seen:
            raise ApiKeyError(
                f"API key #{position + 1} repeats API key #{seen[api_key] + 1}; list each key once"
            )
        seen[api_key] = position
        lines.append(f'"~^(?i:bearer) +{api_key}$" "{api_key_fingerprint(api_key)}";')
    return "\n".join(lines) + "\n"


# --- The container's entrypoint ----------------------------------------------------------------


def render_entrypoint_script(
    nginx_command: Sequence[str] = GATEWAY_NGINX_COMMAND,
    watched_paths: Sequence[str] = (GATEWAY_API_KEYS_PATH,),
    poll_seconds: int = KEY_MAP_POLL_SECONDS,
) -> str:
    """A POSIX sh script (busybox ash in the image, dash in tests) run as the container command.

    It starts nginx, reloads it (SIGHUP: new workers, running streams finish on the old ones)
    whenever the content of a watched file (the key map, the certificate and its key) changes,
    and turns the stop signal into nginx's graceful stop. So a key rotated or a certificate
    renewed in its Secret takes effect without restarting the pod, whose GPU server would need
    tens of minutes to load the model again. It also bypasses the image's own entrypoint, whose
    scripts try to rewrite /etc/nginx/conf.d (read-only here).
    """
    if poll_seconds < 1:
        raise ValueError(f"poll_seconds={poll_seconds} must be at least 1")
    if not watched_paths:
        raise ValueError("watched_paths must name at least the key map")
    command = " ".join(shlex.quote(part) for part in nginx_command)
    files = " ".join(shlex.quote(path) for path in watched_paths)
    return f"""set -u
{command} &
nginx_pid=$!
stopping=0
# Kubernetes sends the image's STOPSIGNAL (SIGQUIT) or SIGTERM: both become a graceful stop.
graceful_stop() {{ stopping=1; kill -QUIT "$nginx_pid" 2>/dev/null; }}
trap graceful_stop TERM QUIT INT
last_files=$(cat {files} 2>/dev/null | cksum)
while kill -0 "$nginx_pid" 2>/dev/null; do
  sleep {poll_seconds} &
  sleep_pid=$!
  wait "$sleep_pid" 2>/dev/null  # a trapped signal ends this wait early
  if [ "$stopping" = 1 ]; then
    kill "$sleep_pid" 2>/dev/null
    break
  fi
  files_now=$(cat {files} 2>/dev/null | cksum)
  if [ "$files_now" != "$last_files" ]; then
    last_files=$files_now
    echo "gateway: API key map or certificate changed, reloading nginx" >&2
    kill -HUP "$nginx_pid"
  fi
done
# Let running streams drain; a repeated stop signal must not end the wait early.
while kill -0 "$nginx_pid" 2>/dev/null; do
  wait "$nginx_pid"
done
wait "$nginx_pid"
"""


def gateway_command(settings: GatewaySettings) -> tuple[str, ...]:
    """The sidecar's `command` (the image's own entrypoint is not used): the entrypoint script
    for the pod's paths."""
    return ("/bin/sh", "-c", render_entrypoint_script(watched_paths=settings.watched_paths))


# --- nginx.conf --------------------------------------------------------------------------------


def _openai_error_body(message: str, error_type: str, code: str) -> str:
    # The OpenAI error shape, so that OpenAI client libraries raise a readable error.
    body = {"error": {"message": message, "type": error_type, "param": None, "code": code}}
    text = json.dumps(body, separators=(",", ":"))
    # nginx's `return` takes the text in single quotes, and reads `$` as a variable.
    if "'" in text or "$" in text:
        raise ValueError(f"error body {text} cannot go into a single-quoted nginx string")
    return text


UNAUTHORIZED_BODY = _openai_error_body(
    "Missing or invalid API key. Send the header Authorization: Bearer <key>.",
    "invalid_request_error",
    "invalid_api_key",
)
REQUEST_TOO_LARGE_BODY = _openai_error_body(
    "Request body is larger than the gateway accepts.",
    "invalid_request_error",
    "request_too_large",
)
# The same answer for every method and path outside the allowlist, with or without a key, so a
# 404 tells nothing about keys or about which internal routes the server has.
NOT_FOUND_BODY = _openai_error_body(
    "Unknown route. The gateway serves GET /v1/models, POST /v1/completions, "
    "POST /v1/chat/completions and POST /v1/responses.",
    "invalid_request_error",
    "not_found",
)
PLAIN_HTTP_BODY = _openai_error_body(
    "This endpoint speaks TLS only. Use an https:// base URL.",
    "invalid_request_error",
    "tls_required",
)
# 429, not 503: the OpenAI SDKs treat 429 as "retry later, with backoff".
TOO_MANY_CONNECTIONS_BODY = _openai_error_body(
    "Too many requests in progress from this address. Retry when some have finished.",
    "rate_limit_error",
    "too_many_connections",
)

# Fields of one access-log line. No header but the user agent (it names the client library and
# its version, which operators need when a client misbehaves; it carries no credential), no body,
# no query string ($uri is the path alone, unlike $request or $request_uri): the Authorization
# header, and whatever a client might put in a URL's query, never reach the log.
_ACCESS_LOG_FIELDS = (
    ("time", "$time_iso8601"),
    ("remote_addr", "$remote_addr"),
    ("request_id", "$request_id"),
    ("method", "$request_method"),
    ("path", "$uri"),
    ("status", "$status"),
    ("request_length", "$request_length"),
    ("bytes_sent", "$bytes_sent"),
    ("request_time", "$request_time"),
    ("upstream_status", "$upstream_status"),
    ("upstream_response_time", "$upstream_response_time"),
    ("api_key", API_KEY_FINGERPRINT_VARIABLE),
    ("user_agent", "$http_user_agent"),
)


def _access_log_format() -> str:
    fields = ",".join(f'"{name}":"{variable}"' for name, variable in _ACCESS_LOG_FIELDS)
    return "{" + fields + "}"


# The nginx variable holding the route label: the allowlisted path the request asked for, exactly
# as `location =` matches it (case-sensitive), or OTHER_ROUTE_LABEL. A fixed set of values, so a
# client cannot make the exporter create a series per path it invents.
GATEWAY_ROUTE_VARIABLE = "$gateway_route"
# Fields of one metrics line (to the exporter over syslog): four values from fixed or bounded
# sets. No key, no query string, no path the client chose, no address.
METRICS_LOG_FIELDS = (
    ("route", GATEWAY_ROUTE_VARIABLE),
    ("status", "$status"),
    ("key_fingerprint", API_KEY_FINGERPRINT_VARIABLE),
    ("seconds", "$request_time"),
)


def metrics_route_labels() -> tuple[str, ...]:
    """Every value the route label can take: /health, the OpenAI routes, then "other"."""
    return (HEALTH_ROUTE[1], *(path for _, path in OPENAI_ROUTES), OTHER_ROUTE_LABEL)


def _metrics_log_format() -> str:
    fields = ",".join(f'"{name}":"{variable}"' for name, variable in METRICS_LOG_FIELDS)
    return "{" + fields + "}"


def _metrics_directives(settings: GatewaySettings) -> str:
    """The route map and the syslog line for the exporter; empty when metrics_syslog_server is ""."""
    if not settings.metrics_syslog_server:
        return ""
    # A regex (`~`) entry is matched case-sensitively; a plain map string would not be, and would
    # label /V1/MODELS (a 404 here) as /v1/models.
    routes = "\n".join(
        f'        "~^{path}$" {path};' for path in metrics_route_labels() if path != OTHER_ROUTE_LABEL
    )
    return f"""\
    # The route label for the metrics line: an allowlisted path, or "other" for any other path.
    map $uri {GATEWAY_ROUTE_VARIABLE} {{
        default {OTHER_ROUTE_LABEL};
{routes}
    }}
    # One line per request to the pod's metrics exporter, over UDP on loopback (nginx does not
    # wait for it). Route, status, key fingerprint, duration: no key, no query string.
    log_format gateway_metrics escape=json '{_metrics_log_format()}';
    access_log syslog:server={settings.metrics_syslog_server},tag={GATEWAY_METRICS_SYSLOG_TAG},nohostname gateway_metrics;

"""


def _status_server(settings: GatewaySettings) -> str:
    """nginx's stub_status on a loopback-only listener for the exporter; empty when status_port is 0."""
    if not settings.status_port:
        return ""
    return f"""
    # Connection counters (stub_status) for the pod's metrics exporter, on loopback only: never
    # on the pod IP, so neither the Service nor the scraper reaches it.
    server {{
        listen 127.0.0.1:{settings.status_port};
        # The exporter's reads are not requests to count or log.
        access_log off;
        location = {GATEWAY_STATUS_PATH} {{
            stub_status;
        }}
        location / {{
            return 404;
        }}
    }}
"""


def _openai_location(method: str, path: str) -> str:
    """One allowed OpenAI route: exact path, one method, then the key, then the proxy."""
    return f"""\
        location = {path} {{
            if ($request_method != {method}) {{
                return 404;
            }}
            if ({API_KEY_FINGERPRINT_VARIABLE} = "") {{
                return 401;
            }}
            proxy_pass http://trtllm_serve{path};
        }}
"""


def _tls_directives(settings: GatewaySettings) -> str:
    return f"""\
        # TLS ends here, in the pod: the bearer key never crosses a network in clear text, not
        # even inside the VPC between the load balancer and the pod.
        ssl_certificate {settings.tls_certificate_path};
        ssl_certificate_key {settings.tls_key_path};
        ssl_protocols {" ".join(GATEWAY_TLS_PROTOCOLS)};
        # Clients choose among nginx's (OpenSSL's) default strong ciphers; TLS 1.3 has no weak ones.
        ssl_prefer_server_ciphers off;
        ssl_session_cache shared:gateway_tls:10m;
        ssl_session_timeout 1h;
        # Tickets would need a key rotated across reloads; the session cache needs none.
        ssl_session_tickets off;
        # A plain-HTTP request to this port gets a JSON answer that says to use https.
        error_page 497 = @plain_http;

"""


def render_nginx_conf(settings: GatewaySettings) -> str:
    """The complete nginx.conf for the gateway; the same settings give the same text."""
    s = settings
    upstream = f"{s.upstream_host}:{s.upstream_port}"
    health_method, health_path = HEALTH_ROUTE
    openai_locations = "\n".join(_openai_location(method, path) for method, path in OPENAI_ROUTES)
    tls_directives = _tls_directives(settings) if settings.tls else ""
    text = f"""\
# nginx.conf for the API-key gateway in front of trtllm-serve. Generated by serving/workload/gateway.py.
# Holds no secret: the keys are in {s.api_key_map_path}, included below (a Kubernetes Secret).
# Run with: nginx -c <this file> -g 'daemon off;'
worker_processes {s.worker_processes};
# Each worker raises its own open-file limit to this (at most the container's hard limit).
worker_rlimit_nofile {s.worker_rlimit_nofile};
pid {s.pid_path};
# Process-level messages only (start, reload, worker exits, setrlimit failures): the http block
# below logs requests at crit, so that no request line (with its query string) is written.
error_log {s.error_log_path} warn;
# On SIGQUIT, running streams get this long to finish before workers exit.
worker_shutdown_timeout {s.shutdown_timeout_seconds}s;

events {{
    worker_connections {s.worker_connections};
}}

http {{
    # nginx appends the request line (with its query string), Host and Referer to every message
    # it logs about a request, and logs failed upstream connects, upstream timeouts and limit_conn
    # refusals at level error. At crit none of those is written; the access log still records
    # each such request (status 502/504/429, upstream_status) without the query string.
    error_log {s.error_log_path} crit;

    server_tokens off;
    # Answers nginx makes itself (401, 404, 413, 429) are JSON; proxied answers keep their own.
    default_type application/json;

    client_body_temp_path {s.temp_dir}/client_temp;
    proxy_temp_path {s.temp_dir}/proxy_temp;
    fastcgi_temp_path {s.temp_dir}/fastcgi_temp;
    uwsgi_temp_path {s.temp_dir}/uwsgi_temp;
    scgi_temp_path {s.temp_dir}/scgi_temp;

    # No header but the user agent, no body, no query string: never the Authorization header.
    log_format gateway escape=json '{_access_log_format()}';
    access_log {s.access_log_path} gateway;

{_metrics_directives(settings)}    # Compression would hold server-sent events back until a compressed block fills up.
    gzip off;

    # The longest prompt (98304 tokens) as escaped JSON, plus the chat envelope.
    client_max_body_size {s.client_max_body_bytes};
    # Abuse limits: a client must send its headers promptly and keep a body moving; idle
    # keyed connections are closed after keepalive_timeout, refused ones at once.
    client_header_timeout {s.client_header_timeout_seconds}s;
    client_body_timeout {s.client_body_timeout_seconds}s;
    send_timeout {s.client_send_timeout_seconds}s;
    keepalive_timeout {s.keepalive_timeout_seconds}s;
    lingering_time {s.lingering_time_seconds}s;
    lingering_timeout {s.lingering_timeout_seconds}s;
    # A timed-out connection is reset, so its socket and buffers are freed at once instead of
    # lingering in FIN-WAIT.
    reset_timedout_connection on;

    # Keyed requests in progress per client address (the NLB preserves client addresses).
    limit_conn_zone $binary_remote_addr zone=per_address:{s.limit_conn_zone_megabytes}m;
    limit_conn_status 429;

    # "Authorization: Bearer <key>" -> the key's fingerprint, or "" when no key matches.
    map $http_authorization {API_KEY_FINGERPRINT_VARIABLE} {{
        default "";
        include {s.api_key_map_path};
    }}

    upstream trtllm_serve {{
        # One server: never mark it down after a failure (max_fails=0); each request tries it,
        # so a restarted trtllm-serve is used as soon as it listens again.
        server {upstream} max_fails=0;
        keepalive 32;
        # Below uvicorn's 5 s keep-alive, so nginx never reuses a connection uvicorn is closing.
        keepalive_timeout {UPSTREAM_KEEPALIVE_IDLE_SECONDS}s;
    }}

    server {{
        listen {s.listen};
{tls_directives}
        # Counted only once a request's header is read and it passed the method and key checks
        # (those answer in the rewrite phase, before limit_conn's preaccess phase).
        limit_conn per_address {s.limit_conn_per_address};

        proxy_http_version 1.1;
        # Upstream keep-alive: HTTP/1.1 without "Connection: close".
        proxy_set_header Connection "";
        proxy_set_header Host $host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_set_header X-Request-ID $request_id;
        # trtllm-serve has no use for the key; it must not see (or log) it.
        proxy_set_header Authorization "";
        proxy_connect_timeout {s.upstream_connect_timeout_seconds}s;
        # Stream both ways: each server-sent event goes to the client as soon as it arrives,
        # and a long prompt goes to the server while it is still being uploaded.
        proxy_buffering off;
        proxy_request_buffering off;
        proxy_cache off;
        # An upstream "X-Accel-Buffering: yes" must not turn buffering back on.
        proxy_ignore_headers X-Accel-Buffering;
        # Tell any nginx-like proxy in front of this one not to buffer either.
        add_header X-Accel-Buffering no always;
        proxy_read_timeout {s.upstream_read_timeout_seconds}s;
        proxy_send_timeout {s.upstream_send_timeout_seconds}s;

        # Every answer nginx makes itself is JSON. 405 is what nginx itself answers to TRACE and
        # CONNECT: those become the same 404 as any other method outside the allowlist.
        error_page 401 = @unauthorized;
        error_page 404 405 = @not_found;
        error_page 413 = @request_too_large;
        error_page 429 = @too_many_connections;

        # The load balancer's health check: no key, short timeouts. While the model loads
        # nothing listens on the upstream port, nginx answers 502 and the target stays unhealthy.
        location = {health_path} {{
            if ($request_method != {health_method}) {{
                return 404;
            }}
            proxy_pass http://trtllm_serve{health_path};
            proxy_read_timeout {s.health_timeout_seconds}s;
            proxy_send_timeout {s.health_timeout_seconds}s;
        }}

        # The OpenAI API: one exact location per route, each with its one method (any other
        # method is as unknown as any other path), then the key. proxy_pass names the canonical
        # path, so the server never sees the client's spelling of it (the query string follows).
{openai_locations}
        # Everything else: trtllm-serve's internal routes (/metrics, /release_memory, ...), any
        # unknown path. Answered without looking at the key.
        location / {{
            return 404;
        }}

        location @unauthorized {{
            # A refused client gets its connection closed: it cannot sit on it for free.
            keepalive_timeout 0;
            add_header WWW-Authenticate 'Bearer realm="gpt-oss", charset="UTF-8"' always;
            return 401 '{UNAUTHORIZED_BODY}';
        }}

        location @not_found {{
            keepalive_timeout 0;
            return 404 '{NOT_FOUND_BODY}';
        }}

        location @request_too_large {{
            return 413 '{REQUEST_TOO_LARGE_BODY}';
        }}

        location @plain_http {{
            keepalive_timeout 0;
            return 400 '{PLAIN_HTTP_BODY}';
        }}

        location @too_many_connections {{
            keepalive_timeout 0;
            return 429 '{TOO_MANY_CONNECTIONS_BODY}';
        }}
    }}
{_status_server(settings)}}}
"""
    return text
