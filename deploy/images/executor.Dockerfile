# Hangar executor, from a binary built on the host (scripts/images.sh builds it
# static, CGO_ENABLED=0 -trimpath, and prepares this build context: the binary
# and rootfs.tar — /tmp (1777), /etc/ssl/certs/ca-certificates.crt, /etc/passwd
# and /etc/group with the non-root user 65532, and the service's state
# directories owned by it), plus the host's git with its helpers and shared
# libraries, which the executor uses to fetch run sources. Nothing is pulled:
# FROM scratch.
# With a registry, Dockerfile.source builds the same image from source.
FROM scratch
ADD rootfs.tar /
COPY executor /usr/local/bin/executor
# The output relay, the entrypoint of run containers (ADR 0016): the executor
# copies it into HANGAR_EXECUTOR_IO_DIR, which the engine bind-mounts.
COPY hangar-relay /usr/local/bin/hangar-relay
# The executor talks to the Docker engine through its socket: the user needs
# the socket's group (compose: group_add, Kubernetes: supplementalGroups) or
# root. Access to the Docker socket is root on the host, whatever the user.
USER 65532:65532
EXPOSE 9303
ENTRYPOINT ["/usr/local/bin/executor"]
