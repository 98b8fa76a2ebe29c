"""Type stubs for the compiled wire codec (raft/net/codec.pyx)."""
from raft._core import Message

VERSION: int
FRAME_MESSAGES: int
FRAME_HELLO: int
FRAME_CHALLENGE: int
FRAME_RESPONSE: int
FRAME_ACCEPT: int
HEADER_SIZE: int
MESSAGES_OVERHEAD: int
MESSAGE_HEADER_SIZE: int
ENTRY_HEADER_SIZE: int
DEFAULT_MAX_FRAME: int
FAST_ENTRY: bool

class FrameError(ValueError): ...

def encoded_size(m: Message) -> int: ...
def encode(msgs: list[Message], max_frame: int = ...) -> bytes: ...
def encode_frame(frame_type: int, body: bytes, max_frame: int = ...) -> bytes: ...
def parse_header(header: bytes | bytearray | memoryview, max_frame: int = ...) -> tuple[int, int]: ...
def decode(frame: bytes | bytearray | memoryview, max_frame: int = ...) -> list[Message]: ...

class FrameDecoder:
    max_frame: int
    def __init__(self, max_frame: int = ...) -> None: ...
    @property
    def buffered(self) -> int: ...
    def feed(self, data: bytes | bytearray | memoryview) -> list[list[Message]]: ...
