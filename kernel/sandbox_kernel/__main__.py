"""``python -m sandbox_kernel -f CONNECTION_FILE``: what kernel.json runs."""

from ipykernel.kernelapp import IPKernelApp

from .kernel import SandboxKernel

IPKernelApp.launch_instance(kernel_class=SandboxKernel)
