"""The process pool that runs CPU-bound job code, whose processes end with the process that
started them however it ends.

A worker killed with SIGKILL runs no clean-up, and a `ProcessPoolExecutor`'s processes do not
notice: each keeps the pool's pipes open itself, so it waits on them forever, and keeps
multiprocessing's resource tracker (which reads its pipe until every holder has closed it)
alive with it. So each pool process asks to die with its parent as it starts. On Linux the
kernel does it (PR_SET_PDEATHSIG), even while the job's code is busy in C; elsewhere a thread
waits on the parent's sentinel, which multiprocessing gives every process it spawns.
"""

import asyncio
import ctypes
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
from concurrent.futures import ProcessPoolExecutor

logger = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
"""prctl's option (linux/prctl.h): the signal this process gets when its parent dies."""


def create_cpu_pool(size: int) -> ProcessPoolExecutor:
    """The process pool behind `run_in_process`. spawn, not fork: forking a process that runs an
    event loop and Redis connections copies their state into the child.

    PR_SET_PDEATHSIG fires when the thread that spawned the process ends, not the whole
    process: the pool spawns its processes from the thread that submits work (CPython 3.11),
    which is the event loop's (`run_in_executor`), the main thread of the api and the worker.
    """
    return ProcessPoolExecutor(
        max_workers=size,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=die_with_parent,
        initargs=(os.getpid(),),
    )


async def close_cpu_pool(pool: ProcessPoolExecutor) -> None:
    """Cancel the work not started, wait for the pool's processes to end and release its
    queues' semaphores. Not left to the interpreter's exit: uvicorn ends on SIGTERM by raising
    SIGTERM again after its shutdown, which skips the exit handlers, and the semaphores would
    then be left to the resource tracker, which warns that they leaked."""
    await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)


def die_with_parent(parent_pid: int) -> None:
    """The pool's initializer, run first in each of its processes: end this process when
    `parent_pid` (the process that created the pool) ends."""
    if sys.platform == "linux" and _kernel_kills_on_parent_death():
        if os.getppid() != parent_pid:
            # The parent died before the request was made: nobody will send the signal.
            os.kill(os.getpid(), signal.SIGKILL)
        return
    exit_when_parent_ends()


def exit_when_parent_ends() -> None:
    """Where the kernel cannot do it: a thread of this process, started by multiprocessing,
    that ends it once its parent has ended (the parent's sentinel, a pipe whose other end only
    the parent holds, is then at its end)."""
    parent = multiprocessing.parent_process()
    if parent is None or parent.sentinel is None:
        logger.warning("cpu pool process %d cannot watch its parent", os.getpid())
        return
    threading.Thread(
        target=_exit_when_ready, args=(parent.sentinel,), name="parent-watch", daemon=True
    ).start()


def _kernel_kills_on_parent_death() -> bool:
    """Ask Linux for SIGKILL when the parent dies; whether it agreed."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        agreed: bool = libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False
    return agreed


def _exit_when_ready(sentinel: int) -> None:
    """Wait until the parent's sentinel is ready (the parent ended), then end this process."""
    multiprocessing.connection.wait([sentinel])
    os._exit(1)
