"""
Tests for L{phantom_frame.ops.control_client}: where the control site is
reached, from the configuration or C{--control}, and the client's errors.
"""

from __future__ import annotations

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List

from twisted.trial.unittest import SynchronousTestCase

from phantom_frame.config import parse_config
from phantom_frame.ops.control_client import (
    ControlAddress,
    ControlClient,
    ControlError,
    client_for,
    control_address,
    parse_address,
)


def address_of(**root: Any) -> str:
    """
    @return: where the control site of a configuration with C{root} keys
        is reached, as text.
    """
    config = parse_config({**root, "server": {"site": {"proxy_url": "http://127.0.0.1:1"}}})
    return str(control_address(config))


class AddressTests(SynchronousTestCase):
    """
    L{control_address} and L{parse_address}.
    """

    def test_fromConfig(self) -> None:
        """
        The address comes from C{control_bind_address} and C{control_port},
        or from C{control_listen}'s C{tcp:}, C{tcp6:} or C{unix:} form; an
        interface for every address is reached on loopback.
        """
        cases = [
            ({}, "127.0.0.1:17809"),
            ({"control_port": 9000, "control_bind_address": "10.0.0.7"}, "10.0.0.7:9000"),
            ({"control_bind_address": "0.0.0.0"}, "127.0.0.1:17809"),
            ({"control_bind_address": "::"}, "[::1]:17809"),
            ({"control_listen": "tcp:9001:interface=10.0.0.8"}, "10.0.0.8:9001"),
            ({"control_listen": "tcp:port=9002"}, "127.0.0.1:9002"),
            ({"control_listen": "tcp6:9003:interface=\\:\\:1"}, "[::1]:9003"),
            ({"control_listen": "unix:/run/pf/control.sock:mode=660"}, "unix:/run/pf/control.sock"),
            ({"control_listen": "unix:address=/run/pf.sock"}, "unix:/run/pf.sock"),
        ]
        for root, expected in cases:
            self.assertEqual(address_of(**root), expected, root)

    def test_unknowable(self) -> None:
        """
        A port the system picks, or an endpoint a client cannot be told
        how to reach, is an error that says to pass C{--control}.
        """
        for listen in ("tcp:0:interface=127.0.0.1", "systemd:domain=INET:index=0"):
            error = self.assertRaises(ControlError, address_of, control_listen=listen)
            self.assertIn("pass --control HOST:PORT", str(error))

    def test_parse(self) -> None:
        """
        C{--control} takes C{HOST:PORT}, C{[IPV6]:PORT}, C{PORT}, an
        C{http://} URL or C{unix:PATH}.
        """
        self.assertEqual(parse_address("10.1.2.3:80"), ControlAddress("10.1.2.3", 80))
        self.assertEqual(parse_address("[::1]:81"), ControlAddress("::1", 81))
        self.assertEqual(parse_address("82"), ControlAddress("127.0.0.1", 82))
        self.assertEqual(parse_address("http://localhost:83/"), ControlAddress("localhost", 83))
        self.assertEqual(parse_address("0.0.0.0:84"), ControlAddress("127.0.0.1", 84))
        self.assertEqual(parse_address("unix:/tmp/pf.sock"), ControlAddress(path="/tmp/pf.sock"))
        for bad in ("", "host", "host:0", "host:99999", "unix:", ":80"):
            self.assertRaises(ValueError, parse_address, bad)

    def test_tokenFromEnvironment(self) -> None:
        """
        C{client_for} reads the token as the proxy does: C{$env:}
        references included; C{--control} replaces the address.
        """
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write('control_auth = "$env:PF_CLI_TEST_TOKEN"\ncontrol_port = 9100\n[server.site]\n')
        os.environ["PF_CLI_TEST_TOKEN"] = "from-env"
        self.addCleanup(os.environ.pop, "PF_CLI_TEST_TOKEN", None)
        client = client_for(path)
        self.assertEqual((client.token, str(client.address)), ("from-env", "127.0.0.1:9100"))
        self.assertEqual(str(client_for(path, "127.0.0.1:9200").address), "127.0.0.1:9200")
        error = self.assertRaises(ControlError, client_for, path, "nowhere")
        self.assertTrue(str(error).startswith("--control: "), str(error))


class Handler(BaseHTTPRequestHandler):
    """
    Answers with the status and JSON its server was given, and records the
    requests.
    """

    def do_GET(self) -> None:
        """
        Answer a GET.
        """
        self.answer()

    def do_POST(self) -> None:
        """
        Answer a POST.
        """
        self.answer()

    def answer(self) -> None:
        """
        Record the request, then send the server's status and payload.
        """
        server: Any = self.server
        length = int(self.headers.get("content-length") or 0)
        server.seen.append(
            {"method": self.command, "path": self.path, "auth": self.headers.get("authorization"),
             "body": self.rfile.read(length)}
        )
        body = json.dumps(server.payload).encode()
        self.send_response(server.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        """
        Log nothing.
        """


class ClientTests(SynchronousTestCase):
    """
    L{ControlClient} over a real loopback socket.
    """

    def serve(self, status: int, payload: Any) -> Any:
        """
        @return: a server on a loopback port the system picks, answering
            C{status} with C{payload}; stopped at the end of the test.
        """
        server: Any = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.status, server.payload = status, payload
        server.seen: List[Dict[str, Any]] = []
        thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
        thread.start()
        self.addCleanup(thread.join)
        self.addCleanup(server.server_close)
        self.addCleanup(server.shutdown)
        return server

    def client(self, server: Any, token: Any = "t0k") -> ControlClient:
        """
        @return: a client of C{server}.
        """
        return ControlClient(ControlAddress("127.0.0.1", server.server_address[1]), token, timeout=10)

    def test_json(self) -> None:
        """
        Requests carry the bearer token and the JSON body; the answer is
        decoded.
        """
        server = self.serve(200, {"ok": True})
        self.assertEqual(self.client(server).json("POST", "/invalidate", {"pattern": "/a"}), {"ok": True})
        [seen] = server.seen
        self.assertEqual(
            seen, {"method": "POST", "path": "/invalidate", "auth": "Bearer t0k", "body": b'{"pattern": "/a"}'}
        )

    def test_errors(self) -> None:
        """
        A 401 says to check (or set) C{control_auth}; any other error gives
        the status and the control site's reason, in one line.
        """
        server = self.serve(401, {"error": "unauthorized"})
        where = f"127.0.0.1:{server.server_address[1]}"
        error = self.assertRaises(ControlError, self.client(server).json, "GET", "/stats")
        self.assertEqual(str(error), f"the control site at {where} refused the token (401): check control_auth")
        error = self.assertRaises(ControlError, self.client(server, None).json, "GET", "/stats")
        self.assertEqual(str(error), f"the control site at {where} requires a token (401): set control_auth")
        server.status, server.payload = 503, {"error": "redis unreachable"}
        error = self.assertRaises(ControlError, self.client(server).json, "GET", "/stats")
        self.assertEqual(str(error), f"the control site at {where} answered 503 to GET /stats: redis unreachable")
