# Hangar gateway, from a binary built on the host (scripts/images.sh builds it
# static, CGO_ENABLED=0 -trimpath, and prepares this build context: the binary
# and rootfs.tar — /tmp (1777), /etc/ssl/certs/ca-certificates.crt, /etc/passwd
# and /etc/group with the non-root user 65532, and the service's state
# directories owned by it). Nothing is pulled: FROM scratch.
# With a registry, Dockerfile.source builds the same image from source.
FROM scratch
ADD rootfs.tar /
COPY gateway /usr/local/bin/gateway
USER 65532:65532
EXPOSE 7300 9300
ENTRYPOINT ["/usr/local/bin/gateway"]
