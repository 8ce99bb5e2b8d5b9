"""Sending one frame without websockets' per-message coroutine when nothing can make it wait.

``Connection.send`` enters an async context manager per message: it checks the state, has the
Sans-I/O protocol build the frame, writes it, waits while the transport is paused (flow
control) and, on errors, runs the close handshake. For an OCPP answer or a relayed frame on an
open connection whose transport is not paused, none of that can suspend: the same protocol
object builds the frame and the transport takes it in one call. That path was a tenth of the
CPU per StatusNotification. Anything else (closing, paused, another send in progress) goes
through ``send`` itself, which waits, raises ConnectionClosed and closes as it always does.
"""

from __future__ import annotations

from websockets.asyncio.connection import Connection
from websockets.protocol import State


def send_now(connection: Connection, frame: str | bytes) -> bool:
    """Write ``frame`` (text for str, binary for bytes) if that cannot wait; False: it was not
    written, ``await connection.send(frame)`` instead."""
    if (
        connection.protocol.state is not State.OPEN
        or connection.paused
        or getattr(connection, "send_in_progress", None) is not None  # websockets 17
        or getattr(connection, "fragmented_send_waiter", None) is not None  # websockets 14
        or connection.transport.is_closing()
    ):
        return False
    if isinstance(frame, str):
        connection.protocol.send_text(frame.encode())
    else:
        connection.protocol.send_binary(frame)
    connection.send_data()
    return True
