"""The container runtime: namespaces, the root filesystem, cgroups, the container init."""
