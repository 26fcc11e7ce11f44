"""espeak-ng's front end, through libespeak-ng (ctypes): the phonemes of a text with their audio positions.

With `espeakINITIALIZE_PHONEME_EVENTS`, libespeak-ng reports one event per phoneme to its synthesis
callback, carrying the phoneme's mnemonic (espeak-ng's own ASCII names: `A:`, `eI`, `_:` for a pause
...) and the sample at which its audio starts. `render` collects those events together with
espeak-ng's waveform: `wavenet-tts` is trained on the phonemes and a pitch contour measured on that
waveform (see arcli/audio/linguistic.py), and never hears the waveform itself when it speaks.

The library keeps global state (one voice, one callback), so calls are serialised with a lock.
Debian: `apt-get install espeak-ng` (libespeak-ng1).
"""

from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass

import numpy as np

from arcli.errors import DataError, OptionError

LIBRARY = "libespeak-ng.so.1"
DEFAULT_PITCH = 50  # espeak-ng -p (0-99)
DEFAULT_SPEED = 165  # espeak-ng -s, words per minute

# espeak_lib.h (libespeak-ng 1.51)
_SYNCHRONOUS = 2  # AUDIO_OUTPUT_SYNCHRONOUS: the callback runs inside espeak_Synth
_PHONEME_EVENTS = 0x0001  # espeakINITIALIZE_PHONEME_EVENTS
_DONT_EXIT = 0x8000  # espeakINITIALIZE_DONT_EXIT: report errors instead of calling exit()
_EVENT_END_OF_LIST, _EVENT_PHONEME = 0, 7
_RATE, _PITCH = 1, 3  # espeak_PARAMETER
_POS_CHARACTER, _CHARS_UTF8 = 1, 1


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Voice(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("languages", ctypes.c_char_p), ("identifier", ctypes.c_char_p),
                ("gender", ctypes.c_ubyte), ("age", ctypes.c_ubyte), ("variant", ctypes.c_ubyte), ("xx1", ctypes.c_ubyte),
                ("score", ctypes.c_int), ("spare", ctypes.c_void_p)]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),  # ms
        ("sample", ctypes.c_int),  # samples since the start of this synthesis
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_Callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


@dataclass(frozen=True)
class Phone:
    name: str  # espeak-ng's phoneme mnemonic
    start: float  # seconds from the start of the audio


@dataclass(frozen=True)
class Rendering:
    audio: np.ndarray  # (T,) float32 in [-1, 1], espeak-ng's waveform
    rate: int  # its sample rate (22050 for espeak-ng's voices)
    phones: list[Phone]  # in order; each lasts until the next one starts, the last until the end


class _Engine:
    def __init__(self) -> None:
        try:
            self.lib = ctypes.CDLL(LIBRARY)
        except OSError:
            raise DataError(f"espeak-ng's library ({LIBRARY}) is not installed: apt-get install espeak-ng") from None
        self.rate = self.lib.espeak_Initialize(_SYNCHRONOUS, 0, None, _PHONEME_EVENTS | _DONT_EXIT)
        if self.rate <= 0:
            raise DataError(f"libespeak-ng failed to initialise (error {self.rate}): is espeak-ng-data installed?")
        self.chunks: list[bytes] = []
        self.events: list[tuple[str, int]] = []
        self.callback = _Callback(self._collect)  # kept referenced: the library holds only the pointer
        self.lib.espeak_SetSynthCallback(self.callback)
        self.lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self.lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                          ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]

    def _collect(self, wav, count, events) -> int:
        if count > 0:
            self.chunks.append(ctypes.string_at(wav, 2 * count))
        i = 0
        while events[i].type != _EVENT_END_OF_LIST:
            event = events[i]
            if event.type == _EVENT_PHONEME:
                self.events.append((bytes(event.id.string).split(b"\0")[0].decode("ascii", "replace"), event.sample))
            i += 1
        return 0

    def render(self, text: str, voice: str, pitch: int, speed: int) -> Rendering:
        # As the espeak-ng command does for -v: a voice name, else a language (with an optional +variant).
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0 and self.lib.espeak_SetVoiceByProperties(
            ctypes.byref(_Voice(languages=voice.encode()))
        ) != 0:
            raise OptionError(f"espeak-ng has no voice '{voice}' (see `espeak-ng --voices`)")
        self.lib.espeak_SetParameter(_RATE, int(speed), 0)
        self.lib.espeak_SetParameter(_PITCH, int(pitch), 0)
        self.chunks, self.events = [], []
        data = text.encode("utf-8") + b"\0"
        error = self.lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        if error != 0:
            raise DataError(f"espeak-ng failed to synthesise the text (error {error})")
        self.lib.espeak_Synchronize()
        audio = np.frombuffer(b"".join(self.chunks), dtype=np.int16).astype(np.float32) / 32768.0
        phones = [Phone(name, sample / self.rate) for name, sample in self.events]
        return Rendering(audio, self.rate, phones)


_engine: _Engine | None = None
_lock = threading.Lock()


def render(text: str, voice: str = "en-us", pitch: int = DEFAULT_PITCH, speed: int = DEFAULT_SPEED) -> Rendering:
    """espeak-ng's waveform of `text` and its phonemes with their start times."""
    global _engine
    if not 0 <= pitch <= 99:
        raise OptionError(f"espeak-ng pitch must lie in [0, 99], got {pitch}")
    if not 80 <= speed <= 450:
        raise OptionError(f"espeak-ng speed must lie in [80, 450] words per minute, got {speed}")
    with _lock:
        if _engine is None:
            _engine = _Engine()
        return _engine.render(text, voice, pitch, speed)


__all__ = ["Phone", "Rendering", "render", "DEFAULT_PITCH", "DEFAULT_SPEED"]
