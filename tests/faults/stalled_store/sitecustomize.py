"""Loaded only by the worker a fault test starts with this folder on its PYTHONPATH, never by the service.

With ``FAULT_STALL_STORE`` naming a file that does not exist yet, the first store of an output in any pool
process of that worker creates the file, writes its pid and key there, and stops the process right there
(SIGSTOP of itself), so that the test can freeze the whole worker in the middle of a store.
``FAULT_STALL_STORE_AT`` says where:

- ``before_write``: the output encoded, nothing written; once woken it stores the object and goes on.
- ``after_write``: the object written, the store not yet returned; once woken it stays in the store for up
  to ``FAULT_STALL_STORE_LINGER_S`` seconds, so that its soft time limit, which passed while it was
  frozen, strikes there: after the object was written, before the store returned.

Once a ``before_write`` store is over, the file gets a second line, ``stored <key>``.
"""

from __future__ import annotations

import os

MARKER = os.environ.get("FAULT_STALL_STORE")

if MARKER:
    import signal
    import time

    from celery.signals import worker_process_init

    AT = os.environ.get("FAULT_STALL_STORE_AT", "before_write")
    LINGER_S = float(os.environ.get("FAULT_STALL_STORE_LINGER_S", "0"))

    def _first_to_stall(key: str) -> bool:
        try:
            fd = os.open(MARKER, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        except FileExistsError:
            return False
        os.write(fd, f"{os.getpid()} {key}\n".encode())
        os.close(fd)
        return True

    def _stop_here() -> None:
        os.kill(os.getpid(), signal.SIGSTOP)

    def _say(what: str) -> None:
        with open(MARKER, "a") as marker:
            marker.write(what + "\n")

    @worker_process_init.connect
    def _stall_the_first_store(**_kwargs) -> None:
        from storage.local import LocalStorage

        store = LocalStorage.put

        def put(self, key: str, data: bytes, content_type: str = "image/jpeg") -> None:
            if not _first_to_stall(key):
                store(self, key, data, content_type)
            elif AT == "before_write":
                _stop_here()
                store(self, key, data, content_type)
                _say(f"stored {key}")
            else:
                store(self, key, data, content_type)
                _stop_here()
                time.sleep(LINGER_S)

        LocalStorage.put = put
