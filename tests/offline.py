"""Run a Python script with every network attempt refused and logged: python offline.py LOG SCRIPT [ARGS...].

Uses audit hooks (PEP 578), so it sees attempts from any library, before any packet could leave.
"""
import runpy
import sys

NETWORK_EVENTS = {"socket.connect", "socket.getaddrinfo", "socket.gethostbyname", "socket.sendto", "urllib.Request"}
log_path, script, *arguments = sys.argv[1:]


def refuse_network(event, args):
    if event in NETWORK_EVENTS:
        with open(log_path, "a") as log:
            log.write(f"{event} {args!r}\n")
        raise OSError(f"network access refused in this test: {event}")


sys.addaudithook(refuse_network)
sys.argv = [script, *arguments]
runpy.run_path(script, run_name="__main__")
