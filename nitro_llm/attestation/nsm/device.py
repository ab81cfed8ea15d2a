"""The real NSM: ``/dev/nsm`` inside a Nitro Enclave, driven by one ioctl.

The Linux driver takes ``struct nsm_raw { struct nsm_iovec request; struct nsm_iovec response; }``
(each iovec a 64-bit address and a 64-bit length, 32 bytes in all) through
``_IOWR(0x0A, 0, struct nsm_raw) = 0xC0200A00``. We hand it the CBOR request and a 12 KiB response
buffer; it writes the CBOR response and sets the response length. No native extension is needed:
ctypes buffers give stable addresses and ``fcntl.ioctl`` passes the struct.

The file-descriptor functions are injectable so the struct packing and response handling are tested
here with a fake ioctl (there is no ``/dev/nsm`` outside an enclave).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import struct
import threading
from collections.abc import Callable

from nitro_llm.attestation.errors import NsmError, NsmUnavailableError
from nitro_llm.attestation.nsm.messages import REQUEST_MAX_SIZE, RESPONSE_MAX_SIZE

DEVICE_PATH = "/dev/nsm"
NSM_MAGIC = 0x0A
_IOC_WRITE, _IOC_READ = 1, 2
#: Layout of ``struct nsm_raw``: request (addr, len), response (addr, len), native 64-bit words.
NSM_RAW = struct.Struct("=QQQQ")
NSM_IOCTL_RAW = ((_IOC_READ | _IOC_WRITE) << 30) | (NSM_RAW.size << 16) | (NSM_MAGIC << 8) | 0

IoctlFn = Callable[[int, int, bytearray, bool], int]


class DeviceTransport:
    """One open ``/dev/nsm``; ``exchange`` sends a CBOR request and returns the CBOR response."""

    kind = "device"

    def __init__(
        self,
        path: str = DEVICE_PATH,
        *,
        opener: Callable[[str, int], int] = os.open,
        ioctl: IoctlFn = fcntl.ioctl,
        closer: Callable[[int], None] = os.close,
    ) -> None:
        try:
            self._fd = opener(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            raise NsmUnavailableError(f"{path} does not exist: this is not a Nitro Enclave") from None
        except PermissionError:
            raise NsmUnavailableError(
                f"{path} exists but cannot be opened (permission denied)",
                hint="run the enclave application as root, or grant it access to /dev/nsm",
            ) from None
        except OSError as exc:
            raise NsmUnavailableError(f"{path} cannot be opened ({exc.strerror})") from None
        self._ioctl = ioctl
        self._closer = closer
        self._lock = threading.Lock()  # one request buffer in flight per descriptor

    def exchange(self, request: bytes) -> bytes:
        if len(request) > REQUEST_MAX_SIZE:
            raise NsmError(
                f"the NSM request is {len(request)} bytes, above the {REQUEST_MAX_SIZE}-byte limit"
            )
        request_buf = ctypes.create_string_buffer(request, len(request))
        response_buf = ctypes.create_string_buffer(RESPONSE_MAX_SIZE)
        message = bytearray(
            NSM_RAW.pack(
                ctypes.addressof(request_buf), len(request), ctypes.addressof(response_buf), RESPONSE_MAX_SIZE
            )
        )
        with self._lock:
            if self._fd < 0:
                raise NsmError("the NSM device was closed")
            try:
                self._ioctl(self._fd, NSM_IOCTL_RAW, message, True)
            except OSError as exc:
                if exc.errno == errno.EMSGSIZE:
                    raise NsmError("the NSM refused the request: InputTooLarge") from None
                raise NsmError(
                    f"the NSM ioctl failed ({errno.errorcode.get(exc.errno or 0, exc.errno)})"
                ) from None
        _, _, _, length = NSM_RAW.unpack(message)
        if not 0 < length <= RESPONSE_MAX_SIZE:
            raise NsmError(
                f"the NSM reported a response of {length} bytes, outside its {RESPONSE_MAX_SIZE}-byte buffer"
            )
        return response_buf.raw[:length]

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                fd, self._fd = self._fd, -1
                self._closer(fd)
