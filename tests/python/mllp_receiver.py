"""The HL7 v2 peer of tests/hl7v2.rs: an MLLP server built on python-hl7's asyncio server.

Every message it receives is parsed by hl7.parse (through the server's reader) and printed on
stdout as one JSON line: {"control_id", "type", "answer", "values"}, where "values" maps every
non-empty leaf to its unescaped text under the key "SEG#n.field.repetition.component.subcomponent"
(n counts the segment's occurrences; everything 1-based, as HL7 numbers them).

Usage: python mllp_receiver.py PORT (0 for any). It prints {"listening": port} once it listens.
Commands on stdin, one a line, each confirmed by {"mode": command} on stdout, decide how the
following messages are answered:
  ack CODE   an ACK with MSA-1 = CODE (AA, AE, AR, CA, CE, CR) and MSA-2 = the message's MSH-10
  wrong-id   an AA whose MSA-2 is not the message's MSH-10
  garbled    a frame that is not an HL7 message
  silent     no answer at all (the sender's timeout)
"""

import asyncio
import json
import sys

import hl7
from hl7.mllp import start_hl7_server

mode = ["ack", "AA"]


def emit(record):
    print(json.dumps(record), flush=True)


def flatten(message):
    values = {}
    occurrences = {}
    for segment in message:
        name = str(segment[0])
        occurrences[name] = occurrences.get(name, 0) + 1
        n = occurrences[name]
        for f in range(1, len(segment)):
            if name == "MSH" and f in (1, 2):
                continue
            field = segment[f]
            repetitions = field if field and not isinstance(field[0], str) else [field]
            for r, repetition in enumerate(repetitions, 1):
                components = (
                    repetition
                    if isinstance(repetition, hl7.Repetition)
                    else [repetition]
                )
                for c, component in enumerate(components, 1):
                    subcomponents = (
                        component if isinstance(component, list) else [component]
                    )
                    for s in range(1, len(subcomponents) + 1):
                        value = segment.extract_field(n, f, r, c, s)
                        if value:
                            values[f"{name}#{n}.{f}.{r}.{c}.{s}"] = value
    return values


async def answer(reader, writer):
    try:
        while not reader.at_eof():
            message = await reader.readmessage()
            control_id = str(message.segment("MSH")[10])
            emit(
                {
                    "control_id": control_id,
                    "type": str(message.segment("MSH")[9]),
                    "answer": " ".join(mode),
                    "values": flatten(message),
                }
            )
            if mode[0] == "ack":
                writer.writemessage(message.create_ack(mode[1]))
            elif mode[0] == "wrong-id":
                ack = message.create_ack("AA")
                ack.segment("MSA").assign_field("NOT-" + control_id, 2)
                writer.writemessage(ack)
            elif mode[0] == "garbled":
                writer.writeblock(b"this is not HL7")
            await writer.drain()
    except asyncio.IncompleteReadError:
        pass
    finally:
        writer.close()


async def commands():
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return
        mode[:] = line.split()
        emit({"mode": " ".join(mode)})


async def main():
    server = await start_hl7_server(
        answer, "127.0.0.1", int(sys.argv[1]), encoding="utf-8"
    )
    async with server:
        emit({"listening": server.sockets[0].getsockname()[1]})
        await commands()


asyncio.run(main())
