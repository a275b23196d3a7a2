# Python 2.7 (the Autobahn|Testsuite's own interpreter): runs two wstest
# modes the way run.sh needs them, with the suite's own classes.
#
#   python wstest_loopback.py testeeserver PORT_FILE
#       `wstest -m testeeserver`, but bound to 127.0.0.1 on a free port
#       (stock wstest binds every interface, on the port of its -w URL);
#       the port is written to PORT_FILE once it listens.
#   python wstest_loopback.py fuzzingclient SPEC.json
#       `wstest -m fuzzingclient -s SPEC.json`, plus one key the stock
#       client lacks: servers[].headers, extra HTTP headers for the opening
#       handshake (e.g. Authorization). wstest 0.8.2 reads only url, agent,
#       origin, protocols and options from a server entry.
from __future__ import print_function

import json
import os
import sys

# Must come first: installs the reactor wstest uses (epoll here).
from autobahntestsuite import wstest  # noqa: F401
from autobahntestsuite import fuzzing, testee
from twisted.internet import reactor


def testeeserver(port_file):
    factory = testee.TesteeServerFactory("ws://127.0.0.1")
    port = reactor.listenTCP(0, factory, backlog=50, interface="127.0.0.1").getHost().port
    # As if started with -w ws://127.0.0.1:PORT: the Host header's port is
    # checked against it.
    factory.port = factory.externalPort = port
    factory.url = "ws://127.0.0.1:%d" % port
    tmp = port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write("%d\n" % port)
    os.rename(tmp, port_file)
    print("testeeserver listening on 127.0.0.1:%d" % port)
    sys.stdout.flush()
    reactor.run()


def fuzzingclient(spec_file):
    with open(spec_file) as f:
        spec = json.load(f)
    next_server = fuzzing.FuzzingClientFactory.nextServer

    def with_headers(self):
        more = next_server(self)
        if more:
            headers = self.spec["servers"][self.currServer].get("headers", {})
            self.headers = dict((str(k), str(v)) for k, v in headers.items())
        return more

    fuzzing.FuzzingClientFactory.nextServer = with_headers
    fuzzing.startClient(spec)
    reactor.run()


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("testeeserver", "fuzzingclient"):
        sys.exit("usage: %s testeeserver PORT_FILE | fuzzingclient SPEC.json" % sys.argv[0])
    {"testeeserver": testeeserver, "fuzzingclient": fuzzingclient}[sys.argv[1]](sys.argv[2])
