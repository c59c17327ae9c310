"""Real broker servers for the tests, one module per server kind.

Every module here is loaded as a pytest plugin by ``tests/conftest.py``. A module may
define ``CONTRACT_BROKERS``: broker id -> factory, merged into the transport contract
suite's brokers (see ``tests/contract/conftest.py``). Servers listen on free loopback
ports in temporary directories, never on default ports, and only processes the
fixtures started are ever stopped.
"""
