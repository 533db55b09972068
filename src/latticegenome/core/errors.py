"""Errors the user can act on. Each names the file and the problem."""

from __future__ import annotations


class LatticeGenomeError(Exception):
    """Base class: an input problem reported to the user, never a traceback.

    Parameters
    ----------
    message : str
        What is wrong, in words a microscopist understands.
    path : str, optional
        The file concerned; prefixed to the message.
    """

    def __init__(self, message: str, path: str | None = None):
        self.path = None if path is None else str(path)
        self.reason = message
        super().__init__(f"{self.path}: {message}" if self.path else message)

    def with_path(self, path) -> "LatticeGenomeError":
        """The same error, naming ``path``."""
        return type(self)(self.reason, path)


class ImageReadError(LatticeGenomeError):
    """The file cannot be read as an image, or its content is unusable."""


class PixelSizeError(LatticeGenomeError):
    """Neither the file nor the configuration gives the pixel size."""


class NoLatticeError(LatticeGenomeError):
    """No atomic lattice can be found in the image."""


class ModelMismatchError(NoLatticeError):
    """The image does not fit the configured projection or contrast (the reason
    says what it looks like instead)."""


class ConfigError(LatticeGenomeError):
    """The configuration is invalid."""


class TransferError(LatticeGenomeError):
    """A transfer failed or was refused."""
