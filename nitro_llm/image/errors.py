"""Errors of the image build. Each names the input at fault (a Debian package, a wheel, the model,
a tool) so that a failed build says what changed, and its hint says what to run next.

The image's measurements go into the KMS key policy: a build that silently took a different input
would produce an enclave that KMS refuses, long after the build, far from the cause. Failing at the
input, by name, is the cheap place to find out.
"""

from __future__ import annotations

from nitro_llm.errors import NitroLLMError

LOCK_UPDATE_HINT = (
    "if the change is intended, regenerate the lock with 'nitro-llm image lock update' "
    "and review the diff; otherwise clear the cached file and build again"
)


class ImageError(NitroLLMError, code="image_build_failed"):
    pass


class InputMismatchError(ImageError):
    """An input's bytes differ from what the lock or the caller pinned."""

    code = "image_input_mismatch"
    default_hint = LOCK_UPDATE_HINT

    def __init__(self, input_name: str, message: str, *, hint: str | None = None) -> None:
        super().__init__(f"{input_name}: {message}", hint=hint)
        self.input_name = input_name


# An input cannot be found locally nor fetched.
class InputMissingError(ImageError):
    code = "image_input_missing"

    def __init__(self, input_name: str, message: str, *, hint: str | None = None) -> None:
        super().__init__(f"{input_name}: {message}", hint=hint)
        self.input_name = input_name


class LockFileError(ImageError, code="image_lock_invalid"):
    """regenerate it with 'nitro-llm image lock update' (or restore it from git)"""


# A host tool the build needs is missing or failed.
class ToolError(ImageError, code="image_tool_failed"):
    pass


# The files to put in the image do not form a valid tree (conflicts, unsafe paths).
class LayoutError(ImageError, code="image_layout_invalid"):
    pass


# A published image manifest cannot be read or is not one the build writes.
class ManifestError(ImageError, code="image_manifest_invalid"):
    pass
