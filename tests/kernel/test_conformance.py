"""Message-spec conformance of the "Bash (sandbox)" kernel (jupyter_kernel_test).

`jupyter_kernel_test.KernelTests` starts the installed kernelspec itself (in
``setUpClass``, with ``start_new_kernel``) and validates every reply and
IOPub message it reads against the v5 message schemas. The class below only
fills in the samples; each ``test_*`` of the base class that has a sample runs.

The kernel must run its containers in the session's store: ``session_root``
(session-scoped, so set up before the class's ``setUpClass``) sets
SANDBOX_ROOT, which the kernel inherits; ``setUpClass`` checks that it did.
"""

from __future__ import annotations

import os

import jupyter_kernel_test
import pytest

SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" width="20" height="20">'
    '<rect width="20" height="20" fill="teal"/></svg>'
)
PRINT_JSON = """printf '{"a": 1}'"""


@pytest.mark.usefixtures("session_root")
class TestSandboxKernelConformance(jupyter_kernel_test.KernelTests):
    kernel_name = "sandbox"
    language_name = "bash"
    file_extension = ".sh"

    code_hello_world = "echo 'hello, world'"
    code_stderr = "echo oops >&2"
    # Exactly one output message: the error (bash prints nothing for `false`).
    code_generate_error = "false"

    completion_samples = [
        {"text": "ech", "matches": {"echo"}},
        {"text": "echo $HOM", "matches": {"$HOME"}},
    ]

    complete_code_samples = [
        "echo hi",
        "for i in 1; do echo $i; done",
        "if true; then echo yes; fi",
        "cat <<EOF\nhello\nEOF",
        "%limits",  # a magic only: nothing for bash to parse
        "%limits\necho hi",
        "",
    ]
    incomplete_code_samples = [
        "for i in 1; do",
        "echo 'abc",
        'echo "abc',
        "if true; then",
        "f() {",
        "cat <<EOF\nhello",
        "echo a \\",
        "%limits\nwhile true; do",
    ]
    invalid_code_samples = [
        "fi fi )",
        "if then",
        "done",
        "echo )",
    ]

    code_display_data = [
        {"code": "printf '<b>hi</b>' > /tmp/x.html; display /tmp/x.html", "mime": "text/html"},
        {"code": f"printf '%s' '{SVG}' > /tmp/x.svg; display /tmp/x.svg", "mime": "image/svg+xml"},
        {"code": "printf '# Title\\n' | display --mime text/markdown", "mime": "text/markdown"},
        {"code": PRINT_JSON + " > /tmp/x.json; display /tmp/x.json", "mime": "application/json"},
    ]

    code_inspect_sample = "cd"

    # The kernel has no way to clear output and no pager payloads, no
    # execute_result (a shell prints, it returns no values) and no history.
    code_clear_output = ""
    code_page_something = ""
    code_execute_result: list[dict[str, str]] = []

    @classmethod
    def setUpClass(cls) -> None:
        # Else the kernel would use the host's default store and daemon.
        assert os.environ.get("SANDBOX_ROOT"), "session_root did not run before setUpClass"
        super().setUpClass()

    def test_kernel_info_details(self) -> None:
        """The kernel_info_reply names the kernel and advertises no debugger."""
        self.flush_channels()
        msg_id = self.kc.kernel_info()
        reply = self.kc.get_shell_msg(timeout=jupyter_kernel_test.TIMEOUT)
        jupyter_kernel_test.validate_message(reply, "kernel_info_reply", msg_id)
        content = reply["content"]
        self.assertEqual(content["status"], "ok")
        self.assertEqual(content["implementation"], "sandbox_kernel")
        self.assertEqual(content["language_info"]["mimetype"], "text/x-sh")
        self.assertNotIn("debugger", content.get("supported_features", []))
        self.assertFalse(content.get("debugger", False))

    def test_error_content(self) -> None:
        """A failing command: ename ExitStatus, evalue the status, one error message."""
        self.flush_channels()
        reply, output = self.execute_helper("exit 3")
        self.assertEqual(reply["content"]["status"], "error")
        self.assertEqual(reply["content"]["ename"], "ExitStatus")
        self.assertEqual(reply["content"]["evalue"], "3")
        self.assertEqual([m["msg_type"] for m in output], ["error"])
        self.assertEqual(output[0]["content"]["evalue"], "3")
