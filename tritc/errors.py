"""The exception hierarchy of tritc: one class per kind of failure, shared by every stage.

A leaf module: it imports nothing from tritc, so `tritc.ir` may use it without depending on
anything above it. User errors (bad model, bad option, bad artifact) derive from `CompilerError`;
the CLI prints their message on one line and exits 2, with no traceback. A bug in tritc is any other
exception (`InternalError` when tritc adds context): the CLI prints its traceback and exits 1.
"""

from __future__ import annotations


class CompilerError(Exception):
    """Base of every error tritc raises for a problem with its input rather than a bug in tritc."""


class ModelFormatError(CompilerError):
    """The file is not a readable ONNX model (not protobuf, truncated, empty, bad container)."""


class ModelValidationError(CompilerError):
    """The model parses but is not a valid graph (cycle, undefined value, type or shape clash)."""


class UnsupportedError(CompilerError):
    """Valid ONNX that tritc does not handle (op, opset, dtype, control flow)."""


class UnsafePathError(CompilerError):
    """A path inside a model (external data) points outside the folder it must stay in."""


class ResourceLimitError(CompilerError):
    """A configured budget (tensor bytes, node count, folding size, nesting) would be exceeded."""


class IRParseError(CompilerError):
    """The textual IR does not parse; the message names the line and column."""


class VerificationError(CompilerError):
    """The graph breaks an IR invariant (SSA, use lists, types); raised by `verify`."""


class OptionError(CompilerError):
    """A command-line or API option is malformed or names something that does not exist."""


class ArtifactError(CompilerError):
    """An artifact file cannot be used."""


class ArtifactIntegrityError(ArtifactError):
    """An artifact is truncated, corrupted or tampered with (a hash does not match)."""


class ArtifactVersionError(ArtifactError):
    """An artifact was written by a newer (or unknown) format version."""


class ArtifactCompatibilityError(ArtifactError):
    """An artifact was built for a target this host cannot run and cannot be rebuilt for it (another architecture;
    an FPGA stream for another ISA version or accelerator build)."""


class ArtifactWriteError(ArtifactError):
    """An artifact could not be written (disk full, a read-only folder); the destination was left as it was."""


class InputShapeError(CompilerError, ValueError):
    """The inputs of a call disagree with the model's shapes: a dim that is not the size the model fixes, or sizes
    that break a relation between its symbols (`total` = `past+seq`). The message names the input, the axis,
    the symbol and both values."""


class NumericalMismatchError(CompilerError):
    """Compiled outputs differ from the reference beyond tolerance (used by verify and tests)."""


class InternalError(Exception):
    """A bug in tritc, not a problem with its input: a pass raised something other than a CompilerError, or left an
    invalid graph. Deliberately not a CompilerError; the message names the pass and the passes before it, and the
    exception that went wrong is its `__cause__`."""


class RunError(RuntimeError):
    """Compiled code stopped with a non-zero status; the message names the node and what failed. Not a
    CompilerError (the model and inputs were accepted) and not a bug: the CLI prints it on one line, exit 2."""


class AcceleratorTimeoutError(RunError):
    """A device run went over its budget (simulated cycles, or wall-clock seconds of a watchdog): a hung or runaway
    accelerator. The message says "accelerator timeout after ..." and names the budget."""


class RunOutOfMemoryError(RunError, MemoryError):
    """The memory a call needs could not be had: the arena (every intermediate value and kernel scratch) at the
    call's sizes, or memory a node of the compiled code allocates itself."""
