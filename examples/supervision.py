"""A supervision tree of actors: a parser feeding a writer, restarted as OTP would.

With ``rest_for_one``, when the parser crashes the writer started after it is restarted too;
when the writer crashes alone, only the writer is. Handles stay valid across restarts.

Run: actorflow run examples/supervision.py   (or: python examples/supervision.py)
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path

import actorflow as af


@af.remote
class Writer:
    def __init__(self, path: str) -> None:
        self.path = path

    def write(self, line: str) -> int:
        with open(self.path, "a") as f:
            f.write(line + "\n")
        return os.getpid()


@af.remote
class Parser:
    def parse(self, text: str) -> str:
        if not text:
            raise ValueError("nothing to parse")
        return text.strip().upper()

    def pid(self) -> int:
        return os.getpid()


async def main() -> None:
    path = os.path.join(tempfile.mkdtemp(), "out.txt")
    # max_task_retries: a call that meets a restart is sent again to the new incarnation
    retry = {"max_task_retries": 2}
    tree = await af.supervise(
        [af.child(Parser, name="parser", options=retry),
         af.child(Writer, path, name="writer", options=retry)],
        strategy="rest_for_one", max_restarts=3, within_s=10.0, name="pipeline",
    )
    parser, writer = tree["parser"], tree["writer"]
    pid_before = await writer.write.remote(await parser.parse.remote(" hello "))
    parser_pid = await parser.pid.remote()
    await af.kill(parser, no_restart=False)  # its process dies: the tree restarts it...
    # ...and, rest_for_one, the writer started after it. The same handles reach the new
    # incarnations; calls made meanwhile wait for them.
    pid_after = await writer.write.remote(await parser.parse.remote(" world "))
    print("parser restarted:", parser_pid != await parser.pid.remote())
    print("writer restarted with the parser:", pid_before != pid_after)
    text = await asyncio.to_thread(Path(path).read_text)  # file I/O off the event loop
    print("file:", text.split())
    await tree.stop()


if __name__ == "__main__":
    af.run(main)
